//! A demo app for trying forkserve's supervision: it takes exactly the forkserve command line
//! and config file, and its endpoints make a worker misbehave on demand.
//!
//! | path | answer |
//! |---|---|
//! | `/` | hello, with the worker's id and generation |
//! | `/pid` | the worker's pid |
//! | `/sleep/MS` | 200 after an async sleep of MS milliseconds (the worker stays responsive; logged at debug level when it starts) |
//! | `/spin/MS` | 200 after blocking the worker's thread for MS milliseconds, as a stuck handler does (logged when it starts) |
//! | `/panic` | the handler panics; the worker survives and answers 500 |
//! | `/count` | how many requests this worker has served (state that is not `Send`) |
//! | `/alloc/MB` | allocates MB mebibytes, touches them and keeps them for the worker's life (to try `max_worker_memory`) |
//! | `/echo` | the request body, read whole, and its trailers as `name: value` lines after it; a body that cannot be read is answered 200, as a careless app would, and forkserve replaces that with the status the gate gave the body |
//! | `/client` | who forkserve says the client is: `ADDR SCHEME HOST`, and `xff=` with the `X-Forwarded-For` the app still sees |
//! | `/drip/MS` | a 200 whose body comes one line every 100 ms for MS milliseconds (a response that has started and is slow) |
//! | `/overlong` | a 200 that says `Content-Length: 10` and yields 64 KiB, as a buggy app would (hyper sends the first 10 bytes) |
//!
//! Its environment makes workers misbehave from the start:
//! - `DEMO_FAIL_BOOT=1`: the app factory fails, as an app that cannot reach its database would
//!   (`DEMO_FAIL_BOOT=panic`: it panics);
//! - `DEMO_FAIL_BOOT_FILE=PATH`: it fails while that file exists (to make only the workers of a
//!   reload, or the replacements of dead workers, fail);
//! - `DEMO_BOOT_SLEEP_MS=MS`: the factory takes MS milliseconds (to try `boot_timeout`);
//! - `DEMO_BOOT_HOLD_FILE=PATH`: the factory waits while that file exists, saying so once (to
//!   hold a reload's new workers in booting for as long as a test looks at them);
//! - `DEMO_CRASH_AFTER_MS=MS`: each worker aborts MS milliseconds after it has booted (a crash
//!   loop);
//! - `DEMO_REQUEST_END_FILE=PATH`: each request's end event is appended to PATH as one line of
//!   `key=value` fields (see [`request_end_line`]), by a hook registered with
//!   `WorkerContext::on_request_end`.
//!
//! ```text
//! cargo run --example demo -- --workers 2 --bind 127.0.0.1:8000
//! ```

use std::cell::Cell;
use std::convert::Infallible;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};

type Reply = Result<Response<UnsyncBoxBody<Bytes, Infallible>>, Infallible>;

fn text(status: StatusCode, body: String) -> Reply {
    let mut response = Response::new(Full::new(Bytes::from(body)).boxed_unsync());
    *response.status_mut() = status;
    Ok(response)
}

/// Memory `/alloc` keeps: it is never freed, as in a leak.
static KEPT: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());

/// A body of one line every 100 ms, for `ms` milliseconds.
struct Drip {
    left: u64,
    next: Pin<Box<tokio::time::Sleep>>,
}

impl Drip {
    fn reply(ms: u64) -> Reply {
        let next = Box::pin(tokio::time::sleep(Duration::from_millis(100)));
        Ok(Response::new(Drip { left: ms / 100, next }.boxed_unsync()))
    }
}

impl Body for Drip {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        ready!(self.next.as_mut().poll(cx));
        self.left -= 1;
        let deadline = self.next.deadline() + Duration::from_millis(100);
        self.next.as_mut().reset(deadline);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(format!("{} left\n", self.left))))))
    }
}

/// A body of one 64 KiB frame whose size is not told in advance: `/overlong` declares 10 bytes.
struct Overlong(Option<Bytes>);

impl Body for Overlong {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.take().map(|data| Ok(Frame::data(data))))
    }
}

/// The number after `prefix` in `path`, if the path is `prefix` followed by digits only.
fn millis(path: &str, prefix: &str) -> Option<u64> {
    path.strip_prefix(prefix)?.parse().ok()
}

async fn handle(req: Request<Incoming>, worker: (u64, u64), served: Rc<Cell<u64>>) -> Reply {
    served.set(served.get() + 1);
    if req.uri().path() == "/echo" {
        return match req.into_body().collect().await {
            Ok(collected) => {
                let trailers = collected.trailers().cloned().unwrap_or_default();
                let mut body = collected.to_bytes().to_vec();
                for (name, value) in &trailers {
                    body.extend_from_slice(format!("\n{name}: ").as_bytes());
                    body.extend_from_slice(value.as_bytes());
                }
                Ok(Response::new(Full::new(Bytes::from(body)).boxed_unsync()))
            }
            // A careless app would answer 200 here; forkserve turns it into what was wrong.
            Err(e) => text(StatusCode::OK, format!("body error ignored: {e}\n")),
        };
    }
    let path = req.uri().path();
    if path == "/" {
        return text(
            StatusCode::OK,
            format!("hello from worker {} (generation {})\n", worker.0, worker.1),
        );
    }
    if path == "/pid" {
        return text(StatusCode::OK, format!("{}\n", std::process::id()));
    }
    if path == "/client" {
        let client = req.extensions().get::<forkserve::Client>().expect("set by forkserve");
        let addr = client.addr().map_or("-".to_string(), |a| a.to_string());
        let xff = req.headers().get("x-forwarded-for").and_then(|v| v.to_str().ok());
        return text(
            StatusCode::OK,
            format!(
                "{addr} {} {} xff={}\n",
                client.scheme(),
                client.host().unwrap_or("-"),
                xff.unwrap_or("none")
            ),
        );
    }
    if path == "/count" {
        return text(StatusCode::OK, format!("{}\n", served.get()));
    }
    if path == "/panic" {
        panic!("the demo's /panic handler panics on purpose");
    }
    if let Some(ms) = millis(path, "/sleep/") {
        tracing::debug!("sleeping {ms} ms");
        tokio::time::sleep(Duration::from_millis(ms)).await;
        return text(StatusCode::OK, format!("slept {ms} ms\n"));
    }
    if let Some(mb) = millis(path, "/alloc/") {
        // Written to, so that the pages are resident, not just reserved.
        let block = vec![1u8; (mb as usize) << 20];
        KEPT.lock().unwrap().push(block);
        return text(StatusCode::OK, format!("allocated {mb} MiB\n"));
    }
    if path == "/overlong" {
        let mut response =
            Response::new(Overlong(Some(Bytes::from(vec![b'x'; 64 * 1024]))).boxed_unsync());
        response.headers_mut().insert(hyper::header::CONTENT_LENGTH, 10.into());
        return Ok(response);
    }
    if let Some(ms) = millis(path, "/drip/") {
        return Drip::reply(ms);
    }
    if let Some(ms) = millis(path, "/spin/") {
        // Blocks the worker's only thread: no other request on this worker is served meanwhile.
        tracing::info!("blocking the worker's thread for {ms} ms");
        std::thread::sleep(Duration::from_millis(ms));
        return text(StatusCode::OK, format!("blocked {ms} ms\n"));
    }
    text(StatusCode::NOT_FOUND, "not found\n".into())
}

/// One request-end event as a line: `worker=1 by=App ending=Complete status=200 method=GET
/// target=/ version=HTTP/1.1 request_bytes=0 response_bytes=5 client=127.0.0.1 micros=42`, with
/// `-` for what is not known.
fn request_end_line(e: &forkserve::RequestEnd<'_>) -> String {
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    format!(
        "worker={} by={:?} ending={:?} status={} method={} target={} version={} \
         request_bytes={} response_bytes={} client={} micros={}\n",
        e.worker(),
        e.answered_by(),
        e.ending(),
        or_dash(e.status().map(|s| s.as_u16().to_string())),
        e.method().unwrap_or("-"),
        or_dash(e.target().map(|t| t.into_owned())),
        or_dash(e.version().map(|v| format!("{v:?}"))),
        e.request_body_bytes(),
        e.response_body_bytes(),
        or_dash(e.client().map(|c| c.to_string())),
        e.duration().as_micros(),
    )
}

fn env_millis(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.parse().ok()
}

fn main() -> std::process::ExitCode {
    forkserve::run(|worker: &forkserve::WorkerContext| {
        match std::env::var("DEMO_FAIL_BOOT").as_deref() {
            Ok("1") => return Err("DEMO_FAIL_BOOT=1: refusing to start".into()),
            Ok("panic") => panic!("DEMO_FAIL_BOOT=panic: the app factory panics"),
            _ => {}
        }
        if let Some(path) = std::env::var_os("DEMO_FAIL_BOOT_FILE") {
            if std::path::Path::new(&path).exists() {
                return Err(format!("{} exists: refusing to start", path.to_string_lossy()).into());
            }
        }
        if let Some(ms) = env_millis("DEMO_BOOT_SLEEP_MS") {
            std::thread::sleep(Duration::from_millis(ms));
        }
        if let Some(path) = std::env::var_os("DEMO_BOOT_HOLD_FILE") {
            let path = std::path::Path::new(&path);
            if path.exists() {
                tracing::info!("DEMO_BOOT_HOLD_FILE exists: holding the boot");
                while path.exists() {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        if let Some(ms) = env_millis("DEMO_CRASH_AFTER_MS") {
            // The factory runs in the worker's runtime: a task it spawns runs once it serves.
            tokio::task::spawn_local(async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                tracing::error!("DEMO_CRASH_AFTER_MS={ms}: aborting");
                std::process::abort();
            });
        }
        if let Some(path) = std::env::var_os("DEMO_REQUEST_END_FILE") {
            // One write per line, in append mode: lines from several workers do not mix. A
            // local file's write does not block the worker for long; a real log would buffer.
            let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
            worker.on_request_end(move |e| {
                use std::io::Write;
                let _ = (&file).write_all(request_end_line(e).as_bytes());
            });
        }
        let id = (worker.id(), worker.generation());
        // Per-worker state needs no locks: each worker serves on a single thread.
        let served = Rc::new(Cell::new(0));
        Ok::<_, forkserve::BoxError>(service_fn(move |req| handle(req, id, served.clone())))
    })
}
