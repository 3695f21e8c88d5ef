//! The command line: the config file's path, the [`Overrides`] of its settings, and what to do
//! with them (`--check-config`, `--print-config`), or a [`Command`] instead of serving
//! (`forkserve status`); and who the program says it is in `--help`, `--version` and its errors
//! (`Identity`): forkserve, or a program built on it.
//!
//! The setting flags are not written here: each comes from its setting's declaration in the
//! config (see [`crate::config`]), with its help text and its check. Flags win over the file,
//! and keep winning across reloads: a HUP re-reads the file and applies the same
//! [`Overrides`] again, as Gunicorn does.

use std::path::PathBuf;

use clap::{CommandFactory, FromArgMatches, Parser};

pub use crate::config::Overrides;
use crate::config::{ConfigSource, Schema};
use crate::error::Error;

mod command;

pub use self::command::{Command, StatusArgs, Target};

/// Who the command line says the program is: in `--help`, `--version`, usage lines and the
/// prefix of its errors.
#[derive(Debug, Clone)]
pub(crate) enum Identity {
    /// The `forkserve` binary, and programs that run through [`crate::run`]: the command line
    /// as `Cli` declares it.
    Forkserve,
    /// A program built on forkserve (see [`crate::Program`]).
    Program {
        /// Its name, which usage lines and errors show.
        name: &'static str,
        /// What `--version` prints after the name; without one, there is no `--version`.
        version: Option<&'static str>,
        /// The description at the top of `--help`.
        about: Option<&'static str>,
    },
}

impl Identity {
    /// The name errors start with: `NAME: error: …`.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Identity::Forkserve => "forkserve",
            Identity::Program { name, .. } => name,
        }
    }

    /// The command line it parses. A program keeps forkserve's flags and the signals' text,
    /// which are the server's, and says its own name, version and description.
    fn command(&self) -> clap::Command {
        let command = Cli::command();
        match *self {
            Identity::Forkserve => command,
            Identity::Program { name, version, about } => command
                .name(name)
                .bin_name(name)
                .version(version)
                .about(about)
                .long_about(None::<&str>),
        }
    }
}

/// forkserve: a pre-fork HTTP server. A single-threaded master binds the sockets and supervises
/// worker processes, each running a hyper server on its own single-threaded tokio runtime.
#[derive(Debug, Clone, Parser)]
#[command(name = "forkserve", version, max_term_width = 100)]
// A command is only the first argument: after a flag, `status` is a config file's name, as it
// was before commands existed; `help` stays a file's name too (`--help` is the help).
#[command(args_conflicts_with_subcommands = true, disable_help_subcommand = true)]
#[command(after_help = "\
Signals to the master:
  HUP        reload: re-read the config, start new workers, gracefully stop the old ones
  TERM       graceful stop: finish in-flight requests (up to graceful_timeout), exit 0
  INT, QUIT  fast stop: workers exit at once
  TTIN/TTOU  one more (up to 1024) / one fewer worker; signals are not queued, so a quick burst
             counts as fewer: send one, wait for its log line, then the next
  USR2       binary upgrade: start a new master from the binary, hand over once it serves
  WINCH      after a manual upgrade: stop this (old) master's workers

`forkserve status` shows a running server's workers (see `forkserve status --help`); a config
file named status is `./status`.

Each flag is a config key in kebab case; flags override the config file. Exit codes: 0 ok, 1 runtime error, 2 usage or config error,
3 workers failed to boot.")]
pub struct Cli {
    /// The TOML config file. Without one, the defaults apply.
    #[arg(value_name = "CONFIG")]
    pub config: Option<PathBuf>,

    /// Settings that override the config file's.
    #[command(flatten)]
    pub overrides: Overrides,

    /// Validate the config and exit: prints nothing but errors; exit 0 if valid, 2 if not.
    #[arg(long, conflicts_with = "print_config")]
    pub check_config: bool,

    /// Print the effective config (file and flags merged) as TOML and exit.
    #[arg(long)]
    pub print_config: bool,

    /// A command to run instead of serving.
    #[command(subcommand)]
    pub command: Option<Command>,
}

impl Cli {
    /// Parses the process's arguments. `--help` and `--version` print and exit 0; bad usage
    /// becomes [`Error::Usage`].
    pub fn from_env() -> Result<Cli, Error> {
        Cli::try_parse().map_err(usage_error)
    }

    /// Parses the process's arguments as the command line of the program `identity` names.
    pub(crate) fn from_env_as(identity: &Identity) -> Result<Cli, Error> {
        Cli::from_args_as(identity, std::env::args_os())
    }

    /// Parses the given arguments (the first is the program name) as the command line of the
    /// program `identity` names.
    pub(crate) fn from_args_as<I, T>(identity: &Identity, args: I) -> Result<Cli, Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = identity.command().try_get_matches_from(args).map_err(usage_error)?;
        Cli::from_arg_matches(&matches).map_err(usage_error)
    }

    /// Parses the given arguments (the first is the program name).
    pub fn from_args<I, T>(args: I) -> Result<Cli, Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Cli::try_parse_from(args).map_err(usage_error)
    }

    /// Splits the command line into where the config comes from and what overrides it; the file
    /// is read with `schema`.
    pub fn source(&self, schema: Schema) -> ConfigSource {
        ConfigSource { path: self.config.clone(), overrides: self.overrides.clone(), schema }
    }
}

fn usage_error(e: clap::Error) -> Error {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        // Printing help or the version is what was asked for, not an error.
        let _ = e.print();
        std::process::exit(0);
    }
    let rendered = e.render().to_string();
    let message = rendered.trim_end().strip_prefix("error: ").unwrap_or(rendered.trim_end());
    Error::Usage(message.to_string())
}

#[cfg(test)]
mod settings_tests;

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{LogLevel, Schema};

    #[test]
    fn flags_override_the_file() {
        let cli = Cli::from_args([
            "forkserve",
            "-w",
            "3",
            "-b",
            "127.0.0.1:1",
            "-b",
            "unix:/tmp/x.sock",
            "--graceful-timeout",
            "2.5",
            "--log-level",
            "debug",
        ])
        .unwrap();
        let config = cli.source(Schema::default()).load().unwrap();
        assert_eq!(config.server.workers.resolve(), 3);
        assert_eq!(config.server.bind.len(), 2);
        assert_eq!(config.server.graceful_timeout.0.as_millis(), 2500);
        assert_eq!(config.log.level, LogLevel::Debug);
    }

    #[test]
    fn every_server_setting_has_a_kebab_case_flag() {
        let cli = Cli::from_args([
            "forkserve",
            "--timeout",
            "5",
            "--boot-timeout",
            "7",
            "--request-timeout",
            "1.5",
            "--max-requests",
            "100",
            "--max-requests-jitter",
            "10",
            "--max-worker-memory",
            "256",
            "--max-worker-lifetime",
            "600",
            "--worker-connections",
            "50",
            "--backlog",
            "99",
            "--pidfile",
            "/tmp/x.pid",
        ])
        .unwrap();
        let config = cli.source(Schema::default()).load().unwrap();
        let s = &config.server;
        assert_eq!(s.timeout.0.as_secs(), 5);
        assert_eq!(s.boot_timeout.0.as_secs(), 7);
        assert_eq!(s.request_timeout.0.as_millis(), 1500);
        assert_eq!((s.max_requests, s.max_requests_jitter, s.max_worker_memory), (100, 10, 256));
        assert_eq!(s.max_worker_lifetime.0.as_secs(), 600);
        assert_eq!((s.worker_connections, s.backlog), (50, 99));
        assert_eq!(s.pidfile.as_deref(), Some(Path::new("/tmp/x.pid")));
        // Gunicorn's spelling of the pidfile flag works too.
        let cli = Cli::from_args(["forkserve", "--pid", "/tmp/y.pid"]).unwrap();
        assert_eq!(cli.overrides.pidfile.as_deref(), Some(Path::new("/tmp/y.pid")));
    }

    #[test]
    fn status_is_a_command_as_the_first_argument_only() {
        let cli = Cli::from_args(["forkserve", "status", "--pid", "12", "--json"]).unwrap();
        let Some(Command::Status(args)) = cli.command else { panic!("{cli:?}") };
        assert_eq!((args.target, args.json), (Some(Target::Pid(12)), true));
        let cli = Cli::from_args(["forkserve", "status", "-p", "run/fs.pid"]).unwrap();
        let Some(Command::Status(args)) = cli.command else { panic!("{cli:?}") };
        assert_eq!(args.target, Some(Target::Pidfile("run/fs.pid".into())));
        let cli = Cli::from_args(["forkserve", "status", "app.toml"]).unwrap();
        let Some(Command::Status(args)) = cli.command else { panic!("{cli:?}") };
        assert_eq!(args.config.as_deref(), Some(Path::new("app.toml")));
        // A config file, however it is named, when it is not the first argument.
        for args in [&["forkserve", "./status"][..], &["forkserve", "-w", "2", "status"]] {
            let cli = Cli::from_args(args.iter().copied()).unwrap();
            assert!(cli.command.is_none(), "{args:?}");
            assert_eq!(cli.config.as_deref().and_then(Path::file_name), Some("status".as_ref()));
        }
        // `help` is not a command: `--help` is the help.
        let cli = Cli::from_args(["forkserve", "help"]).unwrap();
        assert_eq!(cli.config.as_deref(), Some(Path::new("help")));
        // Naming the server twice is a usage error.
        let twice = Cli::from_args(["forkserve", "status", "--pid", "1", "app.toml"]);
        assert!(matches!(twice, Err(Error::Usage(_))), "{twice:?}");
        // A program built on forkserve has the command too, under its own name.
        let identity = Identity::Program { name: "greeter", version: None, about: None };
        let cli = Cli::from_args_as(&identity, ["greeter", "status", "--pid", "7"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Status(_))));
    }

    #[test]
    fn bad_flags_are_usage_errors() {
        for args in [
            &["forkserve", "-w", "0"][..],
            &["forkserve", "-w", "many"],
            &["forkserve", "-b", "nope"],
            &["forkserve", "--backlog", "0"],
            &["forkserve", "--log-level", "loud"],
            &["forkserve", "--check-config", "--print-config"],
            &["forkserve", "-b", "127.0.0.1:1", "-b", "127.0.0.1:1"],
            &["forkserve", "--worker-connections", "0"],
            &["forkserve", "--max-requests", "-1"],
            &["forkserve", "--request-timeout", "soon"],
        ] {
            let result = Cli::from_args(args.iter().copied())
                .and_then(|c| c.source(Schema::default()).load());
            match result {
                Err(e @ Error::Usage(_)) => assert_eq!(e.exit_code(), 2),
                other => panic!("{args:?}: expected a usage error, got {other:?}"),
            }
        }
    }

    #[test]
    fn flags_win_over_the_file_each_time_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.toml");
        let file = path.to_str().unwrap();
        let source = Cli::from_args(["forkserve", "-w", "2", "--keepalive", "7", file])
            .unwrap()
            .source(Schema::default());
        // As a reload reads it: the file changed, the flags did not.
        for (workers, keepalive, backlog) in [(3, 1, 10), (4, 2, 20)] {
            let text = format!(
                "[server]\nworkers = {workers}\nbacklog = {backlog}\n[http]\nkeepalive = {keepalive}\n"
            );
            std::fs::write(&path, text).unwrap();
            let config = source.load().unwrap();
            assert_eq!(config.server.workers.resolve(), 2, "the flag");
            assert_eq!(config.http.keepalive.0.as_secs(), 7, "the flag");
            assert_eq!(config.server.backlog, backlog, "the file, read again");
        }
    }
}
