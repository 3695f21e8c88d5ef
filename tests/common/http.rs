//! A small HTTP/1.1 client over raw sockets: the tests control every byte they send and see
//! every byte the server sends back, which a full client library would normalize away.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of a header (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Every value of a header (name case-insensitive), in order: `Set-Cookie` comes once per
    /// cookie.
    pub fn all(&self, name: &str) -> Vec<&str> {
        let named = self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name));
        named.map(|(_, v)| v.as_str()).collect()
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One client connection, kept alive across requests.
pub struct Conn<S = TcpStream> {
    stream: S,
    buf: Vec<u8>,
}

impl Conn<TcpStream> {
    pub fn open(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        stream.set_nodelay(true)?;
        Ok(Conn { stream, buf: Vec::new() })
    }

    /// How long a read may wait before it fails with `WouldBlock`.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
    }
}

impl<S: Read + Write> Conn<S> {
    pub fn over(stream: S) -> Conn<S> {
        Conn { stream, buf: Vec::new() }
    }

    /// Sends raw bytes.
    pub fn send(&mut self, raw: &[u8]) -> io::Result<()> {
        self.stream.write_all(raw)
    }

    /// Sends a GET with keep-alive.
    pub fn send_get(&mut self, path: &str) -> io::Result<()> {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
    }

    /// Sends a GET and reads its response.
    pub fn get(&mut self, path: &str) -> io::Result<Response> {
        self.send_get(path)?;
        self.read_response(false)
    }

    /// Sends a request with keep-alive, `headers` after `Host`, and `body` with its
    /// `Content-Length` (unless `headers` frame the body themselves with `Transfer-Encoding`),
    /// and reads its response.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Response> {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        let framed = headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"));
        if !framed && (!body.is_empty() || method == "POST" || method == "PUT") {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        self.send(head.as_bytes())?;
        self.send(body)?;
        self.read_response(method == "HEAD")
    }

    fn fill(&mut self) -> io::Result<bool> {
        let mut chunk = [0u8; 64 * 1024];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    /// Reads a response's status line and headers.
    fn read_head(&mut self) -> io::Result<(u16, Vec<(String, String)>)> {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            if !self.fill()? {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed before a response",
                ));
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.buf.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status =
            status_line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(
                || io::Error::new(io::ErrorKind::InvalidData, status_line.to_string()),
            )?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        Ok((status, headers))
    }

    /// Reads one response; `head_only` for the answer to a HEAD request (no body follows).
    pub fn read_response(&mut self, head_only: bool) -> io::Result<Response> {
        let (status, headers) = self.read_head()?;
        let mut response = Response { status, headers, body: Vec::new() };
        if head_only || status == 204 || status == 304 || (100..200).contains(&status) {
            return Ok(response);
        }
        if let Some(len) = response.header("content-length") {
            let len: usize = len.parse().map_err(|_| io::Error::other("bad content-length"))?;
            while self.buf.len() < len {
                if !self.fill()? {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "body cut short"));
                }
            }
            response.body = self.buf.drain(..len).collect();
        } else if response.header("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
            response.body = self.read_chunked()?;
        } else {
            while self.fill()? {}
            response.body = std::mem::take(&mut self.buf);
        }
        Ok(response)
    }

    fn read_chunked(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = find(&self.buf, b"\r\n") {
                    break i;
                }
                if !self.fill()? {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "chunk cut short"));
                }
            };
            let size_text = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
                .map_err(|_| io::Error::other("bad chunk size"))?;
            self.buf.drain(..line_end + 2);
            while self.buf.len() < size + 2 {
                if !self.fill()? {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "chunk cut short"));
                }
            }
            body.extend(self.buf.drain(..size));
            self.buf.drain(..2);
            if size == 0 {
                return Ok(body);
            }
        }
    }

    /// Reads a response whose body is only counted, not kept; returns (status, body length).
    pub fn read_counting(&mut self) -> io::Result<(u16, u64)> {
        let (status, headers) = self.read_head()?;
        let len: u64 = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut seen = self.buf.len() as u64;
        self.buf.clear();
        let mut chunk = vec![0u8; 256 * 1024];
        while seen < len {
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                break;
            }
            seen += n as u64;
        }
        Ok((status, seen))
    }

    /// True if the server closed the connection (reads EOF or a reset).
    pub fn is_closed(&mut self) -> bool {
        match self.fill() {
            Ok(got_more) => !got_more,
            Err(e) => e.kind() != io::ErrorKind::WouldBlock && e.kind() != io::ErrorKind::TimedOut,
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// One request on a fresh connection.
pub fn get(addr: SocketAddr, path: &str) -> io::Result<Response> {
    Conn::open(addr)?.get(path)
}

/// Sends raw bytes on a fresh connection and reads one response.
pub fn raw(addr: SocketAddr, request: &[u8]) -> io::Result<Response> {
    let mut conn = Conn::open(addr)?;
    conn.send(request)?;
    conn.read_response(request.starts_with(b"HEAD "))
}

/// A connection whose receive buffer is as small as the kernel allows, set before connecting
/// so that the window it advertises stays tiny: a client that will not read.
pub fn tiny_window(addr: SocketAddr) -> TcpStream {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrIn, connect, setsockopt, socket, sockopt,
    };
    let SocketAddr::V4(v4) = addr else { panic!("an IPv4 address: {addr}") };
    let fd = socket(AddressFamily::Inet, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).unwrap();
    setsockopt(&fd, sockopt::RcvBuf, &1024).unwrap();
    connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(v4)).unwrap();
    TcpStream::from(fd)
}

/// Writes `bytes` to a new connection (then its FIN if `shutdown`), and reads until the server
/// closes it: what it sent, and how long that took.
pub fn exchange(addr: SocketAddr, bytes: &[u8], shutdown: bool) -> (Vec<u8>, Duration) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let start = Instant::now();
    s.write_all(bytes).unwrap();
    if shutdown {
        s.shutdown(std::net::Shutdown::Write).unwrap();
    }
    let mut got = Vec::new();
    // An alert may come first; then EOF (or a reset).
    let _ = s.read_to_end(&mut got);
    let took = start.elapsed();
    assert!(took < Duration::from_secs(9), "not closed: {got:?}");
    (got, took)
}

/// curl's answer to `url` and its `extra` options: (status, HTTP version, body).
pub fn curl(url: &str, extra: &[&str]) -> (u16, String, String) {
    let out = std::process::Command::new("curl")
        .args(["-s", "--max-time", "15", "-w", "\n%{http_code} %{http_version}"])
        .args(extra)
        .arg(url)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').unwrap();
    let (code, version) = tail.split_once(' ').unwrap();
    (code.parse().unwrap(), version.to_string(), body.to_string())
}
