//! The smallest forkserve app: your own hyper service under the forkserve master.
//!
//! ```text
//! cargo run --example hello -- --workers 2 --bind 127.0.0.1:8000
//! curl http://127.0.0.1:8000/
//! ```

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};

async fn hello(_req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(b"Hello from a forkserve worker!\n"))))
}

fn main() -> std::process::ExitCode {
    // The closure runs in each worker, after the fork, and builds the service it serves.
    forkserve::run(|_worker: &forkserve::WorkerContext| Ok::<_, Infallible>(service_fn(hello)))
}
