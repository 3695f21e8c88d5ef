//! The commands the command line has besides serving: `forkserve status` ([`StatusArgs`]),
//! and how it names the server it reads ([`Target`]).
//!
//! A command is only ever the first argument: `forkserve status` runs the command, while
//! `forkserve ./status`, or any flag before it (`forkserve -w 2 status`), reads a config file
//! named `status`, as before commands existed.

use std::ffi::OsString;

use clap::builder::TypedValueParser;
use std::path::PathBuf;

/// What to do instead of serving.
#[derive(Debug, Clone, clap::Subcommand)]
#[non_exhaustive]
pub enum Command {
    /// Show what a running server is doing: its workers, their state, the request each is busy
    /// with. Reads the master's shared memory: never signals or disturbs the server.
    Status(StatusArgs),
}

/// `forkserve status`: which server to read, and how to print it.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "\
Name the server with --pid PID, --pid FILE (its pidfile; --pidfile is the same flag), or the
CONFIG it runs with, whose [server] pidfile is read. A value of --pid that is all digits is a
pid; write a pidfile named with digits as ./123.

Exit codes: 0 printed; 1 the server cannot be read (not running, a stale pidfile, not a
forkserve master, another user's server, another forkserve version); 2 usage error.")]
pub struct StatusArgs {
    /// The config file the server runs with: its `[server] pidfile` names the server.
    #[arg(value_name = "CONFIG", conflicts_with = "target")]
    pub config: Option<PathBuf>,

    /// The master's pid, or its pidfile: all digits is a pid, anything else a file.
    #[arg(
        short = 'p',
        long = "pid",
        visible_alias = "pidfile",
        value_name = "PID|FILE",
        value_parser = clap::builder::OsStringValueParser::new().try_map(parse_target)
    )]
    pub target: Option<Target>,

    /// Print one JSON object (for scripts) instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// How the server to read is named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The master's pid.
    Pid(u32),
    /// The pidfile the master writes and holds locked.
    Pidfile(PathBuf),
}

/// `--pid`'s value: a pid if it is all digits (Gunicorn's `--pid` is a pidfile, which the
/// server's own `--pid` keeps; here a number means the process), else a pidfile.
fn parse_target(value: OsString) -> Result<Target, String> {
    let Some(digits) =
        value.to_str().filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
    else {
        if value.is_empty() {
            return Err("expected a pid or a pidfile".into());
        }
        return Ok(Target::Pidfile(PathBuf::from(value)));
    };
    match digits.parse::<u32>() {
        Ok(pid) if pid > 0 && pid <= i32::MAX as u32 => Ok(Target::Pid(pid)),
        _ => Err(format!("{digits} is not a pid (for a pidfile named so, write ./{digits})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_are_a_pid_and_anything_else_a_pidfile() {
        assert_eq!(parse_target(OsString::from("4321")), Ok(Target::Pid(4321)));
        assert_eq!(
            parse_target(OsString::from("/run/fs.pid")),
            Ok(Target::Pidfile(PathBuf::from("/run/fs.pid")))
        );
        assert_eq!(
            parse_target(OsString::from("./12")),
            Ok(Target::Pidfile(PathBuf::from("./12")))
        );
        assert!(parse_target(OsString::from("0")).is_err());
        assert!(parse_target(OsString::from("99999999999")).is_err());
        assert!(parse_target(OsString::from("")).is_err());
    }
}
