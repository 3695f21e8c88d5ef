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
//!
//! With `DEMO_FAIL_BOOT=1` in its environment, the app factory fails, as an app that cannot
//! reach its database would; with `DEMO_FAIL_BOOT_FILE=PATH`, it fails while that file exists
//! (to make only the workers of a reload fail).
//!
//! ```text
//! cargo run --example demo -- --workers 2 --bind 127.0.0.1:8000
//! ```

use std::cell::Cell;
use std::convert::Infallible;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};

type Reply = Result<Response<Full<Bytes>>, Infallible>;

fn text(status: StatusCode, body: String) -> Reply {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    Ok(response)
}

/// The number after `prefix` in `path`, if the path is `prefix` followed by digits only.
fn millis(path: &str, prefix: &str) -> Option<u64> {
    path.strip_prefix(prefix)?.parse().ok()
}

async fn handle(req: Request<Incoming>, worker: (u64, u64), served: Rc<Cell<u64>>) -> Reply {
    served.set(served.get() + 1);
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
    if let Some(ms) = millis(path, "/spin/") {
        // Blocks the worker's only thread: no other request on this worker is served meanwhile.
        tracing::info!("blocking the worker's thread for {ms} ms");
        std::thread::sleep(Duration::from_millis(ms));
        return text(StatusCode::OK, format!("blocked {ms} ms\n"));
    }
    text(StatusCode::NOT_FOUND, "not found\n".into())
}

fn main() -> std::process::ExitCode {
    forkserve::run(|worker: &forkserve::WorkerContext| {
        if std::env::var_os("DEMO_FAIL_BOOT").is_some_and(|v| v == "1") {
            return Err("DEMO_FAIL_BOOT=1: refusing to start".into());
        }
        if let Some(path) = std::env::var_os("DEMO_FAIL_BOOT_FILE") {
            if std::path::Path::new(&path).exists() {
                return Err(format!("{} exists: refusing to start", path.to_string_lossy()).into());
            }
        }
        let id = (worker.id(), worker.generation());
        // Per-worker state needs no locks: each worker serves on a single thread.
        let served = Rc::new(Cell::new(0));
        Ok::<_, forkserve::BoxError>(service_fn(move |req| handle(req, id, served.clone())))
    })
}
