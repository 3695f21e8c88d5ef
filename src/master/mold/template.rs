//! What a mold does, in its own process (forked from the master, see [`super`]): it lets go of
//! what is the master's, loads the app, says so, and then forks a worker each time the master
//! asks, until the master closes its line. Each worker is forked twice, the middle process
//! sending its pid to the master and exiting at once, so that the worker is reparented to the
//! master (a child subreaper); the worker waits for that before it does anything, and then
//! becomes a worker exactly as one forked by the master does.

use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{Pid, getpid, getppid};
use tracing::error;

use super::super::Master;
use super::super::phase::Generation;
use super::super::upgrade::Succession;
use super::channel::{Channel, Reply, Request};
use crate::app::{Factory, Preload, Side};
use crate::listener::Addr;
use crate::process::{self, Forked};
use crate::worker::EXIT_BOOT_FAILED;

/// How long a new worker waits to be reparented to the master: its middle process exits
/// right after forking it, so this is only reached if the machine is starved.
const ADOPTION: Duration = Duration::from_secs(10);

/// What a forked worker is to be, as the master asked.
struct Order {
    worker: u64,
    slot: usize,
}

impl<F: Factory> Master<'_, F> {
    /// In the child of the fork that made a mold: runs the mold until the master closes its
    /// line, and ends the process; in a worker forked from it, becomes that worker. `mask` is
    /// the master's signal mask, which each worker restores once it can handle signals.
    pub(super) fn become_mold(
        &mut self,
        generation: &Generation,
        preload: &'static dyn Preload,
        line: Channel,
        mask: SigSet,
    ) -> ! {
        let span =
            tracing::info_span!("mold", generation = generation.number, pid = std::process::id());
        // The span is left before a forked worker becomes one: its lines carry its own.
        let order = span.in_scope(|| {
            crate::panics::catch_panic(|| self.mold(generation, preload, &line)).unwrap_or_else(
                |panic| {
                    error!("the mold panicked: {panic}");
                    Err(1)
                },
            )
        });
        match order {
            Ok(Order { worker, slot }) => {
                drop(line);
                self.become_worker(worker, slot, generation, mask)
            }
            Err(code) => std::process::exit(code),
        }
    }

    /// The mold's life: `Ok` in a worker forked from it, `Err` with the exit code in the mold
    /// once it is done.
    fn mold(
        &mut self,
        generation: &Generation,
        preload: &'static dyn Preload,
        line: &Channel,
    ) -> Result<Order, i32> {
        // Nothing to finish: a mold whose master is gone ends at once.
        match process::die_with_parent(self.pid, Signal::SIGKILL) {
            Ok(true) => {}
            Ok(false) => return Err(0),
            Err(e) => tracing::warn!("cannot set the parent-death signal: {e}"),
        }
        // What is the master's alone, as a worker drops it (see `Master::become_worker`): its
        // signal actions, the other molds' lines (a mold holding one would keep that mold from
        // seeing its line close), the old master's channel, the pidfile's lock, and the
        // sockets of addresses its generation does not serve.
        if let Some(signals) = self.signals.take() {
            if let Err(e) = signals.forget_in_worker() {
                error!("cannot reset signal handlers in a mold: {e}");
                return Err(1);
            }
        }
        self.molds.clear();
        drop(std::mem::replace(&mut self.succession, Succession::InCharge));
        if let Some(pidfile) = self.pidfile.take() {
            pidfile.close_in_worker();
        }
        self.listeners.keep_only_for(&Addr::all(&generation.config));
        crate::logging::in_child(generation.config.log.file.as_deref());
        // TERM, INT and QUIT end a mold, as an operator expects, and ABRT (the master's, when
        // it loads past boot_timeout) makes Python's faulthandler print where it is stuck;
        // USR1 reopens the mold's log file, as it does a worker's (see `crate::signals`). The
        // others stay blocked. Each fork blocks them all again, so that a worker starts with
        // every signal blocked.
        let ending: SigSet =
            [Signal::SIGTERM, Signal::SIGINT, Signal::SIGQUIT, Signal::SIGABRT, Signal::SIGUSR1]
                .into_iter()
                .collect();
        if let Err(e) = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&ending), None) {
            tracing::warn!("cannot unblock TERM in a mold: {e}");
        }
        let loaded = crate::panics::catch_panic(|| preload.load(&generation.config))
            .unwrap_or_else(|panic| Err(format!("loading the app panicked: {panic}")));
        if let Err(reason) = loaded {
            // The master logs it with the mold's exit; said here only if it cannot be told.
            if line.reply(&Reply::Failed { reason: reason.clone() }).is_err() {
                error!("cannot load the app: {reason}");
            }
            return Err(EXIT_BOOT_FAILED);
        }
        if line.reply(&Reply::Loaded).is_err() {
            return Err(0);
        }
        loop {
            // The ticket keys a worker inherits from the mold move on while it waits (each
            // hour: windows last 6), so an idle mold does not keep old ones.
            match line.next_request(crate::tls::tickets::advance) {
                Ok(Some(Request::Fork { worker, slot })) => {
                    if let Some(order) = fork_worker(preload, line, worker, slot) {
                        return Ok(order);
                    }
                }
                Ok(None) => return Err(0),
                Err(e) => {
                    error!("cannot read the master's request: {e}");
                    return Err(1);
                }
            }
        }
    }
}

/// Forks worker `worker` twice, under the app runtime's fork protocol: `Some` in the worker,
/// once it is the master's child; `None` in the mold, once the master has the worker's pid or
/// knows why there is none.
fn fork_worker(preload: &dyn Preload, line: &Channel, worker: u64, slot: usize) -> Option<Order> {
    let mut middle = None;
    let side = preload.fork(&mut || match process::fork_mold() {
        Ok(Forked::Parent(pid)) => {
            middle = Some(pid);
            Side::Parent
        }
        Ok(Forked::Child(_)) => {
            // Set in the middle process before it forks, so the worker has it too.
            middle = Some(getpid());
            in_the_middle(line, worker)
        }
        Err(e) => {
            let _ = line.reply(&Reply::ForkFailed { worker, reason: format!("cannot fork: {e}") });
            Side::Parent
        }
    });
    if side == Side::Child {
        if let Some(middle) = middle {
            wait_for_adoption(middle);
        }
        return Some(Order { worker, slot });
    }
    // The middle process exits at once; it says the worker's pid first, and only then exits
    // with 0.
    let pid = middle?;
    let reason = match waitpid(pid, None) {
        Ok(WaitStatus::Exited(_, 0)) => return None,
        Ok(status) => format!("the middle process of its fork ended: {status:?}"),
        Err(e) => format!("cannot wait for the middle process of its fork: {e}"),
    };
    let _ = line.reply(&Reply::ForkFailed { worker, reason });
    None
}

/// In the middle process: forks the worker, tells the master its pid, and exits, which hands
/// the worker to the master. Returns only in the worker.
fn in_the_middle(line: &Channel, worker: u64) -> Side {
    match process::fork_mold() {
        Ok(Forked::Child(_)) => Side::Child,
        Ok(Forked::Parent(pid)) => {
            let told = line.reply(&Reply::Forked { worker, pid });
            if told.is_err() {
                // The master does not know this worker (it gave up waiting, or is gone): one it
                // does not supervise must not serve.
                process::send(pid, nix::sys::signal::Signal::SIGKILL);
            }
            // Nothing of the mold's to run or flush here: `_exit`, not `exit`.
            process::exit_now(if told.is_ok() { 0 } else { 1 })
        }
        Err(e) => {
            let _ = line.reply(&Reply::ForkFailed { worker, reason: format!("cannot fork: {e}") });
            process::exit_now(1)
        }
    }
}

/// In a new worker: waits until its middle process has exited and it belongs to the master
/// (or, if the master is gone, to whoever adopted it: the worker then finds its master gone
/// and exits, see `worker::run`). The middle process may be gone already.
fn wait_for_adoption(middle: Pid) {
    let deadline = Instant::now() + ADOPTION;
    while getppid() == middle && Instant::now() < deadline {
        std::thread::sleep(Duration::from_micros(100));
    }
}
