//! An axum app served by forkserve: any tower service (an axum `Router`, a service wrapped in
//! tower-http layers) is served through `forkserve::from_tower`.
//!
//! ```text
//! cargo run --example axum -- --workers 2 --bind 127.0.0.1:8000
//! curl http://127.0.0.1:8000/
//! curl http://127.0.0.1:8000/hello/you
//! ```

use std::convert::Infallible;

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;
use forkserve::{HttpService, WorkerContext};

/// What each worker's handlers share. axum asks for `Clone + Send + Sync` state even though a
/// forkserve worker calls its service from one thread only.
#[derive(Clone)]
struct Worker {
    id: u64,
}

async fn root(State(worker): State<Worker>) -> String {
    format!("hello from axum in worker {}\n", worker.id)
}

async fn hello(Path(name): Path<String>) -> String {
    format!("hello, {name}\n")
}

/// Runs in each worker, after the fork: builds the router that worker serves.
fn factory(worker: &WorkerContext) -> Result<impl HttpService, Infallible> {
    let app = Router::new()
        .route("/", get(root))
        .route("/hello/{name}", get(hello))
        .with_state(Worker { id: worker.id() });
    Ok(forkserve::from_tower(app))
}

fn main() -> std::process::ExitCode {
    forkserve::run(factory)
}
