//! Every setting of the `[server]`, `[http]`, `[http2]`, `[python]`, `[log]`, `[metrics]` and
//! `[tls]` tables, declared once: its key, type and default, its docs, how it is read and
//! checked, its flag and its `--help` text. The `settings!` macro (in `declare`) writes the
//! tables' structs, the [`Overrides`] and [`Overrides::apply`] from them; the checks the
//! declarations name are in `checks`.
//!
//! Two texts per setting, for two readers: the `///` docs are markdown for rustdoc, the `help`
//! is the plain text `--help` prints. `config/app.toml` and the README document each setting at
//! length; tests (in `cli/settings_tests.rs`) hold both to these declarations: every setting there,
//! with its default and its flag, and nothing else.

use std::path::PathBuf;
use std::time::Duration;

use crate::access_format::AccessFormat;

use super::checks::*;
use super::declare::{Count, List, Ranged, Read, Typed, settings};
use super::python::{EnvVar, PythonApp};
use super::tls::{Listen, SniPair, TlsVersion};
use super::values::check_workers;
use super::{AllowList, Bind, Config, LogFormat, LogLevel, Seconds, UpgradeMode, Workers};

settings! {
    /// The `[server]` table: the process model, the listening sockets, timeouts and recycling.
    [server] ServerConfig {
        /// Addresses to listen on, bound by the master before any worker is forked. Under
        /// `[tls]`, each serves TLS unless written `http://ADDR`; `https://ADDR` needs `[tls]`.
        bind: Vec<Listen> = vec![Bind::Tcp { host: "127.0.0.1".into(), port: 8000 }.into()],
            read List<Listen>, check check_binds,
            flag #1 bind: list, short 'b', value "ADDR",
            help "Address to listen on: HOST:PORT, [IPV6]:PORT or unix:/path; with --tls-cert, \
                  http://ADDR stays cleartext. Repeat for several; replaces the file's list";

        /// How many workers to run: 1 to [`MAX_WORKERS`](super::MAX_WORKERS).
        workers: Workers = Workers::Auto,
            read Typed<Workers>,
            flag #0 workers: value, short 'w', value "N|auto",
            help "Number of worker processes (1 to 1024), or \"auto\" for the number of usable \
                  CPUs";

        /// The listen(2) queue length of every listening socket.
        backlog: u32 = 2048,
            read Backlog, check check_backlog,
            flag #2 backlog: value, value "N",
            help "Length of the listen queue of each socket";

        /// How long a draining worker may take to finish its requests before it is killed. More
        /// than 0: unlike the other timeouts, 0 cannot mean "no limit" (a stuck worker would
        /// never stop), and "cut at once" is what `INT` and `QUIT` are for.
        graceful_timeout: Seconds = secs(30),
            read Typed<Seconds>, check check_graceful_timeout,
            flag #5 graceful_timeout: value, value "SECS",
            help "Seconds a stopping worker may take to finish its requests before it is killed \
                  (more than 0; for a stop that does not wait, send INT or QUIT)";

        /// A serving worker whose event loop has not sent a heartbeat for this long is hung: it
        /// is logged with what it was doing, killed (`SIGABRT`, then `SIGKILL`) and replaced. 0
        /// turns the check off; otherwise at least [`MIN_TIMEOUT`].
        timeout: Seconds = secs(30),
            read Typed<Seconds>, check check_timeout,
            flag #3 timeout: value, short 't', value "SECS",
            help "Seconds without a heartbeat after which a worker is hung: logged, killed and \
                  replaced (0: never; else at least 1)";

        /// A new worker that has not become ready within this long is killed, as a boot
        /// failure. 0 turns the check off.
        boot_timeout: Seconds = secs(30),
            read Typed<Seconds>,
            flag #4 boot_timeout: value, value "SECS",
            help "Seconds a new worker may take to become ready before it is killed as a boot \
                  failure (0: no limit)";

        /// A request whose response is not complete after this long is cancelled: answered
        /// `504`, or its connection closed if the response had started. 0 (the default) is no
        /// limit.
        request_timeout: Seconds = secs(0),
            read Typed<Seconds>,
            flag #6 request_timeout: value, value "SECS",
            help "Seconds after which a request is cancelled and answered 504 (0: no limit)";

        /// A worker that has served this many requests is replaced (its successor first). 0
        /// (the default) is no limit.
        max_requests: u64 = 0,
            read Count,
            flag #7 max_requests: value, value "N",
            help "Replace a worker after it has served this many requests (0: never)";

        /// Up to this many more requests, chosen at random for each worker, so that workers
        /// started together are not all replaced together.
        max_requests_jitter: u64 = 0,
            read Count,
            flag #8 max_requests_jitter: value, value "N",
            help "Add up to this many, at random, to each worker's max-requests";

        /// A worker whose resident memory exceeds this many MiB is replaced, successor first
        /// like every recycling: it serves on until its successor is ready. Each worker reads
        /// its own as requests start (at most every 4 ms) and at each heartbeat, and tells the
        /// master at once. Twice this is a hard ceiling: a worker over it stops accepting at
        /// once, answers with `Connection: close` and finishes what it has while its successor
        /// boots, so that its memory stays bounded even if the successor is slow or cannot
        /// boot. 0 (the default) is no limit.
        max_worker_memory: u64 = 0,
            read Count,
            flag #9 max_worker_memory: value, value "MIB",
            help "Replace a worker whose resident memory exceeds this many MiB, successor first \
                  (0: never); at twice this, it stops accepting while its successor boots";

        /// A worker that has run this long is replaced (its successor first). 0 (the default)
        /// is no limit.
        max_worker_lifetime: Seconds = secs(0),
            read Typed<Seconds>,
            flag #10 max_worker_lifetime: value, value "SECS",
            help "Replace a worker after it has run this many seconds (0: never)";

        /// The most connections one worker keeps open; at this many it stops accepting until
        /// one closes, and the other workers take the new ones. If a new connection still
        /// waits, the worker closes the connection whose client has read nothing for longest
        /// (1 s at least). Each is a file descriptor: the master warns when the open-files limit
        /// leaves less room than this.
        worker_connections: u32 = 1000,
            read Ranged, check check_worker_connections,
            flag #11 worker_connections: value, value "N",
            help "The most connections each worker keeps open at once";

        /// What a binary upgrade (`USR2`) does once the new master serves: stop the old one
        /// (`auto`), or leave both serving until the operator stops the old one (`manual`).
        upgrade: UpgradeMode = UpgradeMode::Auto,
            read Typed<UpgradeMode>,
            flag #12 upgrade: value, value "auto|manual",
            help "After a binary upgrade (USR2): \"auto\" stops the old master once the new one \
                  serves; \"manual\" leaves both serving until you stop the old one (WINCH, then \
                  QUIT)";

        /// Where the master writes its pid.
        #[serde(skip_serializing_if = "Option::is_none")]
        pidfile: Option<PathBuf> = None,
            read Typed<PathBuf>,
            flag #25 pidfile: optional, short 'p', alias "pid", value "FILE",
            help "Write the master's pid to this file";
    }

    /// The `[http]` table: limits and timeouts every request passes before the app sees it
    /// (see the gate in the crate docs). Gunicorn's names where it has them.
    [http] HttpConfig {
        /// Longest request line in bytes (method, target, version); longer is answered 414 and
        /// closed. 0: no limit.
        limit_request_line: u64 = 4094,
            read Count,
            flag #13 limit_request_line: value, value "BYTES",
            help "Longest request line in bytes (414 beyond; 0: no limit)";

        /// Most header fields in a request, 1 to [`MAX_REQUEST_FIELDS`]; more is answered 431
        /// and closed. Whatever the limits, a head is at most 384 KiB (431 and closed).
        limit_request_fields: u64 = 100,
            read Ranged, check check_fields,
            flag #14 limit_request_fields: value, value "N",
            help "Most header fields in a request (431 beyond; whatever the limits, a head is at \
                  most 384 KiB)";

        /// Longest header field line in bytes; longer is answered 431 and closed. 0: no limit.
        limit_request_field_size: u64 = 8190,
            read Count,
            flag #15 limit_request_field_size: value, value "BYTES",
            help "Longest header field line in bytes (431 beyond; 0: no limit)";

        /// Largest request body in bytes: 413 before the body is read when Content-Length says
        /// more, else when a chunked body crosses it; then closed. 0: no limit.
        max_body_size: u64 = 100 * 1024 * 1024,
            read Count,
            flag #16 max_body_size: value, value "BYTES",
            help "Largest request body in bytes (413 beyond; 0: no limit)";

        /// Seconds to receive a complete request head: then 408 if anything was received, and
        /// closed. 0: no limit.
        header_timeout: Seconds = secs(10),
            read Typed<Seconds>,
            flag #17 header_timeout: value, value "SECS",
            help "Seconds to receive a request head (408 after; 0: no limit)";

        /// Seconds without progress while reading a body: then 408 and closed. 0: no limit (and
        /// no `body_min_rate` either).
        body_timeout: Seconds = secs(30),
            read Typed<Seconds>,
            flag #18 body_timeout: value, value "SECS",
            help "Seconds without progress reading a body (408 after; 0: no limit, nor \
                  body-min-rate)";

        /// Bytes per second a body must keep to once the app asks for it: over any stretch of L
        /// seconds spent waiting for it, at least `body_min_rate` × (L − `body_timeout`) bytes
        /// must come. Without it a client sending a byte just within every `body_timeout` holds
        /// its connection for ever. Each body has a waiting credit: it starts at
        /// `body_timeout`; each byte received adds `1 / body_min_rate` seconds, but never beyond
        /// `body_timeout` (an early burst banks no more); the time the server waits on an empty
        /// socket while the app wants the body is taken off (the time the app takes to read is
        /// not); when none is left, 408 and closed. 0: off.
        // Kestrel's MinRequestBodyDataRate: a slow mobile link sends far more.
        body_min_rate: u64 = 240,
            read Count,
            flag #19 body_min_rate: value, value "BYTES",
            help "Bytes per second a body must keep to (over L seconds of waiting, this × (L − \
                  body-timeout) bytes at least): a waiting credit starts at body-timeout, each \
                  byte adds 1/this seconds (up to body-timeout), waiting for the client takes it \
                  off (408 when none is left; 0: off)";

        /// Seconds a response may go without any write progress (the client is not reading),
        /// then the connection is closed. 0: no limit. A worker at `worker_connections` with a
        /// new connection waiting closes the connection stalled longest sooner, after 1 s.
        // nginx's send_timeout: progress on a socket comes in steps of a part of its send
        // buffer, which a slow link may take many seconds to drain, and a client may pause (a
        // phone switching networks); a stalled connection costs the worker little now (see
        // `WRITE_AHEAD`), so a generous wait is affordable.
        send_timeout: Seconds = secs(60),
            read Typed<Seconds>,
            flag #20 send_timeout: value, value "SECS",
            help "Seconds a response may make no write progress (a client not reading) before the \
                  connection is closed (0: no limit; a worker at worker-connections with a new \
                  client waiting closes the longest-stalled one after 1 s)";

        /// Seconds an idle keep-alive connection is kept between requests. 0: no limit.
        keepalive: Seconds = secs(5),
            read Typed<Seconds>,
            flag #21 keepalive: value, value "SECS",
            help "Seconds an idle keep-alive connection is kept (0: no limit)";

        /// Peers whose `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host` and
        /// `Forwarded` are believed (IPs, CIDR networks, or `*`, which trusts anyone: only
        /// behind a proxy that overwrites them). Connections on a unix socket are trusted.
        forwarded_allow_ips: AllowList = local_hosts(),
            read Typed<AllowList>,
            flag #22 forwarded_allow_ips: value, value "IPS",
            help "Peers whose X-Forwarded-* and Forwarded headers are trusted: IPs, networks, \
                  \"*\"";

        /// Connections start with a PROXY protocol header (v1 or v2) from `proxy_allow_ips`.
        proxy_protocol: bool = false,
            read Typed<bool>,
            flag #23 proxy_protocol: switch, value "BOOL",
            help "Connections start with a PROXY protocol header (v1 or v2) from proxy-allow-ips";

        /// Peers allowed to send a PROXY protocol header.
        proxy_allow_ips: AllowList = local_hosts(),
            read Typed<AllowList>,
            flag #24 proxy_allow_ips: value, value "IPS",
            help "Peers allowed to send a PROXY protocol header: IPs, networks, \"*\"";

        /// Cleartext listeners also serve HTTP/2 with prior knowledge (h2c): a connection
        /// that starts with HTTP/2's 24-byte preface is served as HTTP/2 (see `[http2]`), any
        /// other as HTTP/1, unchanged. No `Upgrade: h2c` (RFC 9113 deprecates it).
        h2c: bool = false,
            read Typed<bool>,
            flag #48 h2c: switch, value "BOOL",
            help "Cleartext listeners also serve HTTP/2 with prior knowledge (h2c: a connection \
                  starting with HTTP/2's preface)";
    }

    /// The `[http2]` table: HTTP/2's own settings ("HTTP/2" in the README). The `[http]`
    /// limits apply to HTTP/2 requests too, as far as they map.
    [http2] Http2Config {
        /// Streams (requests) a client may have open at once on one connection; one more is
        /// refused (`RST_STREAM(REFUSED_STREAM)`).
        // nginx's and Go's default; hyper's is 200.
        max_concurrent_streams: u32 = 100,
            read Ranged, check check_streams,
            flag #49 http2_max_concurrent_streams: value, value "N",
            help "Streams a client may have open at once on one HTTP/2 connection (1 to 1000)";

        /// Bytes of one request body a client may send before the app reads them (the
        /// stream's flow-control window), 65535 to 16 MiB.
        // Bounds what one upload buffers in the worker; hyper's 1 MiB × 100 streams would be
        // the connection's window anyway.
        initial_stream_window: u32 = 256 * 1024,
            read Ranged, check check_stream_window,
            flag #50 http2_initial_stream_window: value, value "BYTES",
            help "Bytes of one HTTP/2 request body buffered before the app reads them (65535 to \
                  16 MiB)";

        /// Bytes of request bodies, all streams together, a connection may send before the
        /// apps read them: the most request-body data one connection makes the worker hold.
        /// 65535 to 1 GiB.
        initial_connection_window: u32 = 1024 * 1024,
            read Ranged, check check_connection_window,
            flag #51 http2_initial_connection_window: value, value "BYTES",
            help "Bytes of request bodies, all streams together, one HTTP/2 connection may send \
                  before the apps read them (65535 to 1 GiB)";

        /// Bytes of one response h2 buffers per stream before it takes another piece of the
        /// body (a piece is taken whole: a static file's 64 KiB chunk, an app's frame up to
        /// 256 KiB). 1024 to 16 MiB.
        // hyper's 400 KiB × 100 streams is 40 MiB per slow reader. Below a piece, this hardly
        // changes what a client that does not read holds (about two pieces per stream: the one
        // in h2, the next one hyper holds), but 64 KiB added a third: 20 MB per connection of
        // 100 streams of large static files, 14 MB at 16 KiB (one DATA frame of h2's default
        // size) or at 1 KiB, with the same h2load throughput.
        max_send_buf: u32 = 16 * 1024,
            read Ranged, check check_send_buf,
            flag #52 http2_max_send_buf: value, value "BYTES",
            help "Bytes of one HTTP/2 response buffered for a client that does not read (1024 to \
                  16 MiB)";

        /// Streams a client may open and reset before the server has accepted them; more, and
        /// the connection ends with `GOAWAY(ENHANCE_YOUR_CALM)`: the rapid reset attack
        /// (CVE-2023-44487). 1 to 10000.
        // h2's default.
        max_pending_accept_reset_streams: u32 = 20,
            read Ranged, check check_reset_streams,
            flag #53 http2_max_pending_accept_reset_streams: value, value "N",
            help "Streams a client may open and reset before they are served; more ends the \
                  HTTP/2 connection (rapid reset; 1 to 10000)";

        /// Streams the server may reset for a client's errors on one connection; more, and the
        /// connection ends with `GOAWAY(ENHANCE_YOUR_CALM)`. 1 to 100000.
        // h2's default.
        max_local_error_reset_streams: u32 = 1024,
            read Ranged, check check_error_resets,
            flag #54 http2_max_local_error_reset_streams: value, value "N",
            help "Streams the server may reset for a client's errors on one HTTP/2 connection; \
                  more ends it (1 to 100000)";

        /// Seconds between PINGs on a connection with nothing received, to find dead peers (a
        /// PING unanswered for 20 s closes the connection). 0: off; an idle connection is
        /// closed at `keepalive` anyway.
        keepalive_ping: Seconds = secs(0),
            read Typed<Seconds>,
            flag #55 http2_keepalive_ping: value, value "SECS",
            help "Seconds between HTTP/2 PINGs to a quiet peer (unanswered for 20 s: closed; 0: \
                  off)";
    }

    /// The `[python]` table: how the workers run Python apps (the `wsgi` routes, and
    /// [`wsgi`](PythonConfig::wsgi)). Gunicorn's names where it has them.
    [python] PythonConfig {
        /// A WSGI app served at `/`, after the file's own routes (a route for `/` beside it is
        /// an error): `module:callable`, as Gunicorn names it.
        #[serde(skip_serializing_if = "Option::is_none")]
        wsgi: Option<PythonApp> = None,
            read Typed<PythonApp>,
            flag #27 wsgi: optional, value "MODULE:APP",
            help "Serve this WSGI app at /: MODULE:CALLABLE, as Gunicorn names it \
                  (\"myapp:app\", \"mysite.wsgi:application\", \"pkg:create_app()\")";

        /// Directories put first on `sys.path`, in order, before the app is imported.
        pythonpath: Vec<PathBuf> = Vec::new(),
            read List<PathBuf>, check check_python_path,
            flag #28 pythonpath: list, value "DIR",
            help "A directory to put first on sys.path (repeat for several; replaces the \
                  file's list)";

        /// The virtualenv whose packages the app uses; without it, `$VIRTUAL_ENV`, else the
        /// virtualenv the `forkserve` binary itself is installed in, if any.
        #[serde(skip_serializing_if = "Option::is_none")]
        venv: Option<PathBuf> = None,
            read Typed<PathBuf>,
            flag #29 venv: optional, value "DIR",
            help "The virtualenv the app runs in (default: $VIRTUAL_ENV, else the one forkserve \
                  is installed in)";

        /// The directory the workers change to before importing the app; it also goes on
        /// `sys.path` (after `path`), as the current directory does without it.
        #[serde(skip_serializing_if = "Option::is_none")]
        chdir: Option<PathBuf> = None,
            read Typed<PathBuf>,
            flag #30 chdir: optional, value "DIR",
            help "Change to this directory before importing the app (it goes on sys.path)";

        /// Python threads per worker that run requests, 1 to 256: 1 runs one request in
        /// Python at a time, as Gunicorn's sync worker does; more, as its gthread worker does,
        /// for apps that wait on databases or other services. Slow clients never hold one:
        /// bodies are received and responses sent by the worker's event loop.
        threads: u32 = 1,
            read Ranged, check check_threads,
            flag #31 threads: value, value "N",
            help "Python threads per worker that run requests (1 to 256)";

        /// Import the app once, before the workers are forked, so that they share its memory.
        /// Each generation imports it again, so a reload (`HUP`) loads new code.
        preload: bool = false,
            read Typed<bool>,
            flag #32 preload: switch, value "BOOL",
            help "Import the app once per generation, before its workers fork (shared memory; a \
                  reload still loads new code)";

        /// Environment variables set in the workers before the app is imported: `KEY=VALUE`.
        env: Vec<EnvVar> = Vec::new(),
            read List<EnvVar>, check check_env,
            flag #33 env: list, short 'e', value "KEY=VALUE",
            help "Set an environment variable in the workers (repeat for several; replaces the \
                  file's list)";

        /// For development: reload (as `HUP` does) when a Python file the app loaded, or the
        /// config file, changes.
        reload: bool = false,
            read Typed<bool>,
            flag #34 reload: switch, value "BOOL",
            help "Reload when a loaded Python file or the config file changes (development)";

        /// Request bodies up to this many bytes are kept in memory for the app; a larger one
        /// is written to a temporary file as it arrives, as nginx's `client_body_buffer_size`
        /// does. Either way the whole body is received before the app is called, so that a
        /// slow upload never holds a Python thread.
        body_buffer_size: u64 = 1024 * 1024,
            read Count,
            flag #35 body_buffer_size: value, value "BYTES",
            help "Request bodies larger than this are spooled to a temporary file before the app \
                  runs";
    }

    /// The `[log]` table.
    [log] LogConfig {
        /// The most verbose level that is written.
        level: LogLevel = LogLevel::Info,
            read Typed<LogLevel>,
            flag #26 log_level: value, value "LEVEL",
            help "Log level: error, warn, info, debug or trace";

        /// The file forkserve's own log (master, molds, workers, and whatever the app writes
        /// to stderr) goes to instead of stderr; relative to the config file. Opened for
        /// appending, created with mode 0644; `USR1` reopens it (see "Logs" in the README).
        #[serde(skip_serializing_if = "Option::is_none")]
        file: Option<PathBuf> = None,
            read Typed<PathBuf>,
            flag #36 log_file: optional, alias "error-logfile", value "FILE",
            help "Write the log to this file instead of stderr (USR1 reopens it)";

        /// How each line is written: `text`, or `json` (one object per line).
        format: LogFormat = LogFormat::Text,
            read Typed<LogFormat>,
            flag #37 log_format: value, value "FORMAT",
            help "Log line format: text or json";

        /// The access log: one line per request, to this file (relative to the config file),
        /// or to stdout with `-`. Off without it.
        #[serde(skip_serializing_if = "Option::is_none")]
        access: Option<PathBuf> = None,
            read Typed<PathBuf>,
            flag #38 log_access: optional, alias "access-logfile", value "FILE|-",
            help "Write an access log line per request to FILE, or to stdout with \"-\"";

        /// The access log's format: `combined` (nginx's, and Gunicorn's default fields),
        /// `common`, `json`, or a custom format of Gunicorn's atoms.
        access_format: AccessFormat = AccessFormat::default(),
            read Typed<AccessFormat>,
            flag #39 log_access_format: value, alias "access-logformat", value "FORMAT",
            help "Access log format: combined, common, json, or Gunicorn's atoms \
                  ('%(h)s \"%(r)s\" %(s)s %(D)s')";
    }

    /// The `[metrics]` table: the Prometheus endpoint ("Metrics" in the README).
    [metrics] MetricsConfig {
        /// The address the workers serve Prometheus metrics on (`GET /metrics`), a socket of
        /// its own, bound by the master like `[server] bind`. Off without it: then nothing
        /// is counted either.
        #[serde(skip_serializing_if = "Option::is_none")]
        bind: Option<Bind> = None,
            read Typed<Bind>,
            flag #40 metrics_bind: optional, value "ADDR",
            help "Serve Prometheus metrics at http://ADDR/metrics (HOST:PORT or unix:/path); \
                  off without it";

        /// The path the metrics are served at; any other is answered `404`.
        path: String = "/metrics".into(),
            read Typed<String>, check check_metrics_path,
            flag #41 metrics_path: value, value "PATH",
            help "The path of the metrics on --metrics-bind's address";
    }

    /// The `[tls]` table: HTTPS on the `bind` addresses ("TLS" in the README). The master
    /// loads and checks every pair at start, on `HUP` and with `--check-config`.
    [tls] TlsConfig {
        /// The certificate chain (PEM, leaf first), relative to the config file. Setting it
        /// turns TLS on for every `bind` address not written `http://…`.
        #[serde(skip_serializing_if = "Option::is_none")]
        cert: Option<PathBuf> = None,
            read Typed<PathBuf>,
            flag #42 tls_cert: optional, alias "certfile", value "FILE",
            help "Serve HTTPS with this PEM certificate chain (leaf first) on every bind address \
                  not written http://";

        /// The certificate's private key (PEM: PKCS#8, RSA or EC), relative to the config
        /// file.
        #[serde(skip_serializing_if = "Option::is_none")]
        key: Option<PathBuf> = None,
            read Typed<PathBuf>,
            flag #43 tls_key: optional, alias "keyfile", value "FILE",
            help "The private key of --tls-cert (PEM: PKCS#8, RSA or EC)";

        /// More pairs, chosen by the name a client asks for (SNI) among each leaf's
        /// subjectAltName DNS names (`*.example.com` covers one label); any other name, or
        /// none, gets `cert`/`key`.
        sni: Vec<SniPair> = Vec::new(),
            read List<SniPair>, check SniPair::check_list,
            flag #44 tls_sni: list, value "CERT,KEY",
            help "Another certificate and key, chosen by SNI (repeat for several; replaces the \
                  file's list)";

        /// The oldest TLS version accepted: `"1.2"` or `"1.3"`.
        min_version: TlsVersion = TlsVersion::Tls12,
            read Typed<TlsVersion>,
            flag #45 tls_min_version: value, value "1.2|1.3",
            help "The oldest TLS version accepted: 1.2 or 1.3";

        /// Stateless session resumption (TLS 1.2 and 1.3) that every worker can resume, with
        /// keys derived from a secret the master makes at start.
        session_tickets: bool = true,
            read Typed<bool>,
            flag #46 tls_session_tickets: switch, value "BOOL",
            help "Session tickets any worker can resume (keys from a secret the master makes at \
                  start; rotated every 6 hours)";

        /// Offer HTTP/2 by ALPN (`h2`, then `http/1.1`): a client that asks for `h2` is served
        /// HTTP/2 (see `[http2]`), any other HTTP/1.1. Off, only `http/1.1` is offered.
        http2: bool = true,
            read Typed<bool>,
            flag #56 tls_http2: switch, value "BOOL",
            help "Offer HTTP/2 over TLS by ALPN (h2, then http/1.1)";
    }
}

const fn secs(n: u64) -> Seconds {
    Seconds(Duration::from_secs(n))
}

fn local_hosts() -> AllowList {
    "127.0.0.1,::1".parse().expect("a valid default")
}

/// `backlog` reads as [`Ranged`] does, except that a flag that is not a number has always been
/// refused by the setting's name.
struct Backlog;

impl Read for Backlog {
    type Flag = u64;
    type File = u64;

    fn flag(text: &str) -> Result<u64, String> {
        text.parse().map_err(|_| format!("invalid backlog {text:?}"))
    }

    fn file<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        Ranged::file(d)
    }
}

impl ServerConfig {
    /// Checks what the file's and the flags' parsers check value by value, for a config built
    /// in code, which has been through neither.
    pub(crate) fn check(&self) -> Result<(), String> {
        if let Workers::Count(n) = self.workers {
            check_workers(n.get())?;
        }
        check_timeout(self.timeout)?;
        check_graceful_timeout(self.graceful_timeout)?;
        Ok(())
    }

    /// A limit that 0 turns off.
    pub(crate) fn limit(seconds: Seconds) -> Option<Duration> {
        (!seconds.0.is_zero()).then_some(seconds.0)
    }
}

impl MetricsConfig {
    /// Checks the endpoint's address against the app's `binds`: the same address twice could
    /// never be bound (the second bind fails as "in use", or, for a unix path, as another
    /// process's), so it is refused as the mistake it is. Port 0 is a fresh port each time.
    pub(crate) fn check(&self, binds: &[Listen]) -> Result<(), String> {
        match &self.bind {
            Some(b)
                if binds.iter().any(|l| l.bind == *b)
                    && !matches!(b, Bind::Tcp { port: 0, .. }) =>
            {
                Err(format!(
                    "metrics.bind {b} is also in server.bind: the metrics need an address of \
                     their own"
                ))
            }
            _ => Ok(()),
        }
    }
}
