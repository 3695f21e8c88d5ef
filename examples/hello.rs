//! The smallest forkserve app: your own hyper service under the forkserve master. It needs no
//! dependency but forkserve, which re-exports what a handler uses.
//!
//! ```text
//! cargo run --example hello -- --workers 2 --bind 127.0.0.1:8000
//! curl http://127.0.0.1:8000/
//! ```

use std::convert::Infallible;

use forkserve::bytes::Bytes;
use forkserve::http_body_util::Full;
use forkserve::hyper::body::Incoming;
use forkserve::hyper::service::service_fn;
use forkserve::hyper::{Request, Response};
use forkserve::{HttpService, WorkerContext};

async fn hello(_req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(b"Hello from a forkserve worker!\n"))))
}

/// Runs in each worker, after the fork, and builds the service that worker serves.
fn factory(_worker: &WorkerContext) -> Result<impl HttpService, Infallible> {
    Ok(service_fn(hello))
}

fn main() -> std::process::ExitCode {
    forkserve::run(factory)
}
