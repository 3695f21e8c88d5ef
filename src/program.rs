//! A program built on forkserve, as its operator meets it ([`Program`]): the name, version and
//! description its `--help` shows, the name its errors start with, and the config tables it
//! declares for itself. [`crate::run`] is the program that says it is forkserve and declares
//! none.

use std::fmt;
use std::process::ExitCode;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Server;
use crate::app::{Factory, route_kinds};
use crate::cli::{Cli, Command, Identity};
use crate::config::Schema;
use crate::error::Error;

/// A program that serves with forkserve: its command line (forkserve's flags, under its own
/// name) and its config file (forkserve's tables and routes, and tables of its own).
///
/// ```no_run
/// use std::convert::Infallible;
///
/// use forkserve::bytes::Bytes;
/// use forkserve::http_body_util::Full;
/// use forkserve::hyper::{Response, service::service_fn};
/// use forkserve::{BoxError, HttpService, WorkerContext};
///
/// #[derive(Debug, serde::Deserialize, serde::Serialize)]
/// #[serde(deny_unknown_fields)]
/// struct Greeter {
///     greeting: String,
/// }
///
/// fn factory(worker: &WorkerContext) -> Result<impl HttpService, BoxError> {
///     let greeter = worker.config().table::<Greeter>("greeter").ok_or("no [greeter]")?;
///     let body = Bytes::from(format!("{}\n", greeter.greeting));
///     Ok(service_fn(move |_req| {
///         let body = body.clone();
///         async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
///     }))
/// }
///
/// fn main() -> std::process::ExitCode {
///     forkserve::Program::new("greeter")
///         .version(env!("CARGO_PKG_VERSION"))
///         .about("Greets whoever asks")
///         .table::<Greeter>("greeter")
///         .run(factory)
/// }
/// ```
#[derive(Debug)]
pub struct Program {
    identity: Identity,
    schema: Schema,
}

impl Program {
    /// A program called `name`: what its `--help`, `--version` and usage lines show, and what
    /// its errors start with (`name: error: …`), since it is the program the operator ran and
    /// reads about. Without [`Program::version`], it has no `--version`.
    pub fn new(name: &'static str) -> Program {
        Program {
            identity: Identity::Program { name, version: None, about: None },
            schema: forkserve_schema(),
        }
    }

    /// The program [`crate::run`] runs: forkserve's own name, version and `--help`, and its
    /// app kinds; its [`Program::schema`] reads a config as the `forkserve` binary does
    /// (`Config::from_toml(text, base, Program::forkserve().schema())`).
    pub fn forkserve() -> Program {
        Program { identity: Identity::Forkserve, schema: forkserve_schema() }
    }

    /// The version `--version` prints, after the name: typically `env!("CARGO_PKG_VERSION")`.
    pub fn version(mut self, version: &'static str) -> Program {
        if let Identity::Program { version: v, .. } = &mut self.identity {
            *v = Some(version);
        }
        self
    }

    /// The description at the top of `--help`.
    pub fn about(mut self, about: &'static str) -> Program {
        if let Identity::Program { about: a, .. } = &mut self.identity {
            *a = Some(about);
        }
        self
    }

    /// Declares a table of the program's own, `[name]` in the config file, read as a `T` with
    /// serde: the factory reads it with [`Config::table`](crate::Config::table)
    /// (`worker.config().table::<T>("name")`). Its errors are config errors at `file:line:col`
    /// (exit code 2; `--check-config` reports them; a reload that has one is refused and the
    /// old workers serve on); `#[serde(deny_unknown_fields)]` on `T` refuses a key it does not
    /// know. A file without the table reads as an empty one: give `T`'s fields defaults
    /// (`#[serde(default)]`) to make it optional. `--print-config` prints it, so `T`'s
    /// `Serialize` must write what its `Deserialize` reads.
    ///
    /// `T`'s `Deserialize` and the check run in the master, at start and at each reload: a panic
    /// in them is refused as a config error, not a dead master, but keep them quick and pure.
    ///
    /// # Panics
    ///
    /// If `name` is one of forkserve's tables (`server`, `http`, `log`, `route`), declared
    /// already, or not a bare TOML key (letters, digits, `_`, `-`).
    pub fn table<T>(self, name: &'static str) -> Program
    where
        T: DeserializeOwned + Serialize + fmt::Debug + Send + Sync + 'static,
    {
        self.table_checked::<T>(name, |_| Ok(()))
    }

    /// Like [`Program::table`], with a check of the table once it is read: its `Err` is a
    /// config error at the table (`file:line:col` of its `[name]`).
    ///
    /// # Panics
    ///
    /// As [`Program::table`].
    pub fn table_checked<T>(
        mut self,
        name: &'static str,
        check: impl Fn(&T) -> Result<(), String> + Send + Sync + 'static,
    ) -> Program
    where
        T: DeserializeOwned + Serialize + fmt::Debug + Send + Sync + 'static,
    {
        self.schema = self.schema.table_checked(name, check);
        self
    }

    /// What its config file may hold beyond forkserve's own tables: forkserve's app kinds and
    /// the program's tables. For reading a config as the program does, in its tests:
    /// `Config::from_toml(text, base, program.schema())`.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Runs the program: parses its command line, runs `status` if it is the command, loads
    /// the config file, handles `--check-config` and `--print-config`, and runs the master
    /// until it stops, calling `factory` in each worker to build the service it serves. Errors
    /// are printed as `NAME: error: …`; the exit code is 0, 1 (runtime error), 2 (usage or
    /// config error) or 3 (workers could not boot). See [`crate::run`] for where to call it from.
    pub fn run<F: Factory>(self, factory: F) -> ExitCode {
        let name = self.identity.name();
        match self.try_run(factory) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{name}: error: {e}");
                ExitCode::from(e.exit_code())
            }
        }
    }

    fn try_run<F: Factory>(self, factory: F) -> Result<(), Error> {
        let cli = Cli::from_env_as(&self.identity)?;
        if let Some(Command::Status(args)) = &cli.command {
            return crate::status::run(args, self.schema, self.identity.name());
        }
        let server = Server::from_source(cli.source(self.schema))?;
        if cli.print_config {
            print!("{}", server.config().to_toml());
        }
        if cli.check_config || cli.print_config {
            return Ok(());
        }
        server.run(factory)
    }
}

/// What forkserve reads beyond its own tables: its app kinds, for `[[route]]`s.
pub(crate) fn forkserve_schema() -> Schema {
    Schema::default().with_kinds(route_kinds())
}
