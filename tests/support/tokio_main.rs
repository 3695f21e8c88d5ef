//! Not an example to follow: `forkserve::run` called under `#[tokio::main]`, which forkserve
//! refuses with a usage error (tests/library.rs runs it). Built as an example so that the tests
//! can run it as a program of its own.

use std::convert::Infallible;

use forkserve::bytes::Bytes;
use forkserve::http_body_util::Full;
use forkserve::hyper::body::Incoming;
use forkserve::hyper::service::service_fn;
use forkserve::hyper::{Request, Response};

#[forkserve::tokio::main(flavor = "current_thread", crate = "forkserve::tokio")]
async fn main() -> std::process::ExitCode {
    forkserve::run(|_worker: &forkserve::WorkerContext| {
        Ok::<_, Infallible>(service_fn(|_req: Request<Incoming>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"never served\n"))))
        }))
    })
}
