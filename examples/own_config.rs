//! A program with a name and a config table of its own. `greeter --help` shows its name, version
//! and description; its errors start with `greeter: error:`; its config file may have a
//! `[greeter]` table beside forkserve's, read and checked wherever the config is (at start, by
//! `--check-config`, on each `HUP`), with errors at `file:line:col`; each worker's factory reads
//! it. A program's table needs serde (`serde = { version = "1", features = ["derive"] }`).
//!
//! ```text
//! printf '[server]\nbind = ["127.0.0.1:8000"]\n[greeter]\ngreeting = "Hello"\n' > greeter.toml
//! cargo run --example own_config -- greeter.toml
//! curl http://127.0.0.1:8000/you
//! ```

use std::convert::Infallible;
use std::rc::Rc;

use forkserve::bytes::Bytes;
use forkserve::http_body_util::Full;
use forkserve::hyper::body::Incoming;
use forkserve::hyper::service::service_fn;
use forkserve::hyper::{Request, Response};
use forkserve::{BoxError, HttpService, WorkerContext};
use serde::{Deserialize, Serialize};

/// The `[greeter]` table. `deny_unknown_fields`: a misspelt key is an error, not ignored.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Greeter {
    /// How every answer starts. Required: a file without it is refused.
    greeting: String,
    /// Whom to greet when the path names no one.
    #[serde(default = "world")]
    name: String,
}

fn world() -> String {
    "world".into()
}

/// What serde cannot say about the table: checked once it is read, reported at `[greeter]`.
fn check(greeter: &Greeter) -> Result<(), String> {
    if greeter.greeting.trim().is_empty() {
        return Err("greeting must not be empty".into());
    }
    Ok(())
}

/// Runs in each worker: the table is there, read and checked, as the worker's config has it.
fn factory(worker: &WorkerContext) -> Result<impl HttpService, BoxError> {
    let greeter = worker.config().table::<Greeter>("greeter").ok_or("no [greeter] table")?;
    let greeter = Rc::new((greeter.greeting.clone(), greeter.name.clone(), worker.id()));
    Ok(service_fn(move |req: Request<Incoming>| {
        let (greeting, name, id) = &*greeter;
        let who = req.uri().path().trim_matches('/');
        let who = if who.is_empty() { name.as_str() } else { who };
        let body = Bytes::from(format!("{greeting}, {who}! (worker {id})\n"));
        async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
    }))
}

fn main() -> std::process::ExitCode {
    forkserve::Program::new("greeter")
        // A program would say env!("CARGO_PKG_VERSION"); an example has forkserve's.
        .version("1.4.2")
        .about("greeter: says hello, as its config file's [greeter] table tells it")
        .table_checked::<Greeter>("greeter", check)
        .run(factory)
}
