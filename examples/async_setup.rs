//! An app factory that awaits its setup before it serves, as one that connects a database pool
//! does: `forkserve::factory_async` takes an `async fn` (or an async closure). It runs in each
//! worker's runtime, after the fork, so tasks it spawns there run while it waits.
//!
//! Its environment makes the setup fail, to see what a worker that cannot boot looks like:
//! `ASYNC_SETUP_FAIL=1` returns an error once the setup has been awaited, `ASYNC_SETUP_FAIL=panic`
//! panics there.
//!
//! ```text
//! cargo run --example async_setup -- --workers 2 --bind 127.0.0.1:8000
//! curl http://127.0.0.1:8000/
//! ```

use std::convert::Infallible;
use std::rc::Rc;
use std::time::{Duration, Instant};

use forkserve::bytes::Bytes;
use forkserve::http_body_util::Full;
use forkserve::hyper::body::Incoming;
use forkserve::hyper::service::service_fn;
use forkserve::hyper::{Request, Response};
use forkserve::tokio;
use forkserve::{BoxError, HttpService, WorkerContext};

/// Stands for a database pool: made by a task that takes a while, as connecting does.
struct Pool {
    connected_in: Duration,
}

async fn connect() -> Result<Pool, BoxError> {
    let started = Instant::now();
    let (tx, rx) = tokio::sync::oneshot::channel();
    // A task of the worker's own runtime, running while the factory awaits its answer.
    tokio::task::spawn_local(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = tx.send(Pool { connected_in: started.elapsed() });
    });
    Ok(rx.await?)
}

async fn factory(worker: &WorkerContext) -> Result<impl HttpService, BoxError> {
    let pool = connect().await?;
    match std::env::var("ASYNC_SETUP_FAIL").as_deref() {
        Ok("1") => return Err("ASYNC_SETUP_FAIL=1: the database refused the connection".into()),
        Ok("panic") => panic!("ASYNC_SETUP_FAIL=panic: the setup panics after awaiting"),
        _ => {}
    }
    let pool = Rc::new(pool);
    let id = worker.id();
    Ok(service_fn(move |_req: Request<Incoming>| {
        let pool = Rc::clone(&pool);
        async move {
            let ms = pool.connected_in.as_millis();
            let body = format!("worker {id} connected its pool in {ms} ms\n");
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
        }
    }))
}

fn main() -> std::process::ExitCode {
    forkserve::run(forkserve::factory_async(factory))
}
