//! `forkserve status`: finds a running master — by its pid, by its pidfile, or by the
//! pidfile its config file names —, maps its scoreboard read-only
//! ([`Attached`](crate::scoreboard::Attached)) and prints it ([`render`]).
//!
//! It reads shared memory and nothing else: it sends no signal, opens no socket and asks the
//! master nothing, so it shows a server in the middle of a reload as it is, and cannot
//! disturb one. Its one contact with the server's files is a look at the pidfile's lock.
//!
//! Each way it can fail is one line saying what is wrong and what to do: no such process, a
//! stale pidfile (the lock a running master holds on it is not held), a process that is not a
//! forkserve master, a server this user may not read, another forkserve version.

mod render;

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::cli::{StatusArgs, Target};
use crate::config::{ConfigSource, Schema};
use crate::error::Error;
use crate::scoreboard::Attached;
use crate::scoreboard::view::AttachError;

/// The most of a pidfile read: a pid and a newline, with room to spare.
const PIDFILE_BYTES: u64 = 64;

/// Runs `forkserve status`: prints the server's table (or JSON) on stdout. `name` is the
/// program's, for the note on stderr.
pub(crate) fn run(args: &StatusArgs, schema: Schema, name: &str) -> Result<(), Error> {
    let master = locate(args, schema)?;
    let report = Attached::open(master.pid).map_err(|e| attach_error(&master, e))?.report();
    if report.master_pid != master.pid {
        // A worker (or a mold) keeps the scoreboard it inherited: it names its master.
        if exited(report.master_pid) {
            // Killed: its workers, told by the kernel, are finishing their requests.
            eprintln!(
                "{name}: note: process {} is one of master {}'s processes, but that master has \
                 exited: showing what its remaining workers publish as they stop",
                master.pid, report.master_pid
            );
        } else {
            eprintln!(
                "{name}: note: process {} is not the master but one of its processes: showing master {}",
                master.pid, report.master_pid
            );
        }
    }
    let text = if args.json { render::json(&report) } else { render::table(&report) };
    match io::stdout().lock().write_all(text.as_bytes()) {
        // `forkserve status | head -3`: what was wanted was read.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        result => result.map_err(|e| Error::os("writing to stdout", e)),
    }
}

/// The master to read, and the pidfile that named it, if one did.
#[derive(Debug)]
struct Master {
    pid: u32,
    pidfile: Option<PathBuf>,
}

/// Finds the master the command line names: `--pid PID`, `--pid FILE`, or the config file's
/// `[server] pidfile`.
fn locate(args: &StatusArgs, schema: Schema) -> Result<Master, Error> {
    match (&args.target, &args.config) {
        (Some(Target::Pid(pid)), _) => Ok(Master { pid: *pid, pidfile: None }),
        (Some(Target::Pidfile(path)), _) => from_pidfile(path),
        (None, Some(path)) => {
            let source =
                ConfigSource { path: Some(path.clone()), overrides: Default::default(), schema };
            match source.load()?.server.pidfile {
                Some(pidfile) => from_pidfile(&pidfile),
                None => Err(Error::Usage(format!(
                    "{} sets no [server] pidfile: name the server with --pid PID or --pidfile FILE",
                    path.display()
                ))),
            }
        }
        (None, None) => Err(Error::Usage(
            "which server? name it with --pid PID, --pidfile FILE, or the CONFIG it runs with \
             (its [server] pidfile): `status --pid 1234`"
                .into(),
        )),
    }
}

/// Reads the pid in a pidfile, and checks that a running master holds the file locked (see
/// `crate::pidfile`): a file nobody holds was left by a master that died, and its pid may
/// now be any process's.
fn from_pidfile(path: &Path) -> Result<Master, Error> {
    let fail = |why: String| Error::Status(format!("pidfile {}: {why}", path.display()));
    let file = open_pidfile(path).map_err(|e| {
        fail(match e.kind() {
            io::ErrorKind::NotFound => {
                format!("{e}: the server is not running, or not with this pidfile")
            }
            io::ErrorKind::PermissionDenied => {
                format!("{e}: run this as the server's user, or name the master with --pid PID")
            }
            _ => e.to_string(),
        })
    })?;
    let mut text = String::new();
    (&file).take(PIDFILE_BYTES).read_to_string(&mut text).map_err(|e| fail(e.to_string()))?;
    let pid = text.trim().parse::<u32>().ok().filter(|&pid| pid > 0 && pid <= i32::MAX as u32);
    // A shared lock is refused while the master holds its exclusive one. One that is granted
    // is let go at once, so that a master starting right now is not refused its own.
    let held = match Flock::lock(file, FlockArg::LockSharedNonblock) {
        Ok(_granted) => false,
        Err((_, Errno::EWOULDBLOCK)) => true,
        // A filesystem without locks: the pid alone has to do.
        Err((_, _)) => true,
    };
    let stale = |why: String| {
        Error::Status(format!("stale pidfile {}: {why}: the server is not running", path.display()))
    };
    match (pid, held) {
        (Some(pid), true) => Ok(Master { pid, pidfile: Some(path.to_path_buf()) }),
        (None, true) => Err(fail(format!("holds no pid ({:?})", text.trim()))),
        (None, false) => Err(stale("it holds no pid and no server holds its lock".into())),
        (Some(pid), false) => Err(stale(match command_name(pid) {
            None => format!("no process {pid}"),
            Some(comm) if exited(pid) => format!("process {pid} ({comm}) has exited"),
            Some(comm) => {
                format!("no server holds its lock, so process {pid} ({comm}) is not its master")
            }
        })),
    }
}

/// Opens a pidfile for reading, refusing anything but a regular file: a FIFO put in its
/// place would block the open or the read.
fn open_pidfile(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file =
        std::fs::OpenOptions::new().read(true).custom_flags(nix::libc::O_NONBLOCK).open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
    }
    Ok(file)
}

/// A process's command name (`/proc/PID/comm`, which any user may read), if it exists.
fn command_name(pid: u32) -> Option<String> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(comm.trim_end().to_string())
}

/// Whether process `pid` has exited: gone, or a zombie whose parent has not reaped it yet (a
/// master killed under a supervisor that is slow to wait for it), which has no descriptors
/// left and would otherwise look like some other program.
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and may hold anything.
        Ok(stat) => matches!(
            stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()),
            Some("Z" | "X")
        ),
        Err(e) => e.kind() == io::ErrorKind::NotFound,
    }
}

/// What went wrong reading the master's scoreboard, as one line.
fn attach_error(master: &Master, e: AttachError) -> Error {
    let pid = master.pid;
    let named = match &master.pidfile {
        Some(path) => format!(" (named by pidfile {})", path.display()),
        None => String::new(),
    };
    Error::Status(match e {
        AttachError::NoProcess => format!("no process {pid}{named}: the server is not running"),
        AttachError::NotAMaster => {
            let comm = command_name(pid).map(|c| format!(" ({c})")).unwrap_or_default();
            if exited(pid) {
                format!("process {pid}{comm}{named} has exited: the server is not running")
            } else {
                format!("process {pid}{comm}{named} is not a forkserve master")
            }
        }
        e @ (AttachError::NotPermitted { .. } | AttachError::OtherLayout | AttachError::Io(..)) => {
            format!("process {pid}{named}: {e}")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pidfile_nobody_holds_is_stale_and_one_a_master_holds_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fs.pid");
        let message = |r: Result<Master, Error>| r.unwrap_err().to_string();

        let missing = message(from_pidfile(&path));
        assert!(missing.contains("No such file or directory"), "{missing}");
        assert!(missing.contains(&path.display().to_string()), "{missing}");

        // This process exists, but holds no lock on the file: stale all the same.
        std::fs::write(&path, format!("{}\n", std::process::id())).unwrap();
        let stale = message(from_pidfile(&path));
        assert!(stale.starts_with("stale pidfile"), "{stale}");
        assert!(stale.contains(&format!("process {}", std::process::id())), "{stale}");
        // The look at the lock did not keep it: a master can take it.
        let held = crate::pidfile::Pidfile::create(&path).unwrap();
        let found = from_pidfile(&path).unwrap();
        assert_eq!((found.pid, found.pidfile.as_deref()), (std::process::id(), Some(&*path)));
        drop(held);

        std::fs::write(&path, "").unwrap();
        assert!(message(from_pidfile(&path)).contains("holds no pid"));
        let not_a_file = message(from_pidfile(dir.path()));
        assert!(not_a_file.contains("not a regular file"), "{not_a_file}");
    }
}
