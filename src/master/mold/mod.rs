//! Molds: with a preloaded app (`[python] preload`; whatever [`crate::app::preloader`] says a
//! config preloads), the workers of a generation are not forked by the master but by a
//! template process the master forks first, the generation's *mold* (Pitchfork's design). The
//! mold loads the app once, and forks each worker on the master's request, so that workers
//! share what it loaded, copy-on-write. The master itself never loads the app (it stays
//! single-threaded, with no interpreter), and each generation has a mold of its own, so a
//! reload (`HUP`) loads new code.
//!
//! The mold forks each worker twice, and the middle process exits at once: the worker is then
//! reparented to the master, a child subreaper, which reaps and supervises it as any other
//! (heartbeats, timeouts, recycling, readiness, stops). The master assigns the worker's id and
//! scoreboard slot and asks for it; the mold's reply is its pid ([`channel`]).
//!
//! A mold's life ([`MoldState`]): loading, then ready (forking on request), then told to exit
//! once its generation is no longer wanted (its line closed; killed past a deadline). One that
//! cannot load is a boot failure of its generation, as a worker's would be: exit code 3 on the
//! first start, a rollback during a reload. One that dies once ready is replaced; the workers
//! it forked serve on. Which molds to start and stop is a pure decision ([`decide`]).
//!
//! | module | owns |
//! |---|---|
//! | this one | the master's records of its molds and the verbs that start, stop, ask and reap them |
//! | [`channel`] | the line between the master and a mold, and its messages |
//! | [`template`] | what a mold does, in its own process: load, then fork on request |

mod channel;
mod template;

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tracing::{debug, error, info, warn};

use self::channel::{Channel, Reply, Request};
use super::health::Booting;
use super::phase::Generation;
use super::{Master, deadline};
use crate::app::{Factory, Preload, preloader};
use crate::config::ServerConfig;
use crate::process::{self, Exit, Forked};

/// How long a mold told to exit may take before it is killed: it has nothing to finish.
const EXIT_GRACE: Duration = Duration::from_secs(1);
/// How long the master waits for a mold to answer a fork: forking takes milliseconds, so a mold
/// this late is stopped or stuck, and is replaced.
const FORK_ANSWER: Duration = Duration::from_secs(5);

/// The master's record of one mold.
#[derive(Debug)]
pub(super) struct Mold {
    pub(super) generation: u64,
    pub(super) pid: Pid,
    /// The master's end of the line; `None` once closed, which tells the mold to exit.
    line: Option<Channel>,
    started: Instant,
    pub(super) state: MoldState,
}

/// Where a mold is in its life.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum MoldState {
    /// Loading the app; `error` is why it cannot, once it said so.
    Loading { error: Option<String> },
    /// Loaded: it forks workers on request.
    Ready,
    /// Told to exit (its line closed); killed if still alive at `deadline`.
    Exiting { deadline: Instant },
    /// Sent `SIGKILL`: only its exit is awaited.
    Killed,
}

impl Mold {
    /// Loading or ready: the mold its generation has.
    fn is_active(&self) -> bool {
        matches!(self.state, MoldState::Loading { .. } | MoldState::Ready)
    }
}

/// What the master is to do with its molds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum MoldDecision {
    /// Fork a mold for this generation.
    Start { generation: u64 },
    /// Tell this mold to exit: its generation is no longer wanted.
    Stop { pid: Pid },
}

/// Which molds to start and stop: every generation in `preloading` (those whose workers are
/// kept at strength and preload their app) has one mold loading or ready; any other mold
/// loading or ready goes. A generation's mold is started only when forking may go on
/// (`may_fork`: not during the pause after failures), since starting one is a fork.
pub(super) fn decide(molds: &[Mold], preloading: &[u64], may_fork: bool) -> Vec<MoldDecision> {
    let active = || molds.iter().filter(|m| m.is_active());
    let stop = active()
        .filter(|m| !preloading.contains(&m.generation))
        .map(|m| MoldDecision::Stop { pid: m.pid });
    let start = (preloading.iter().filter(|&&g| may_fork && !active().any(|m| m.generation == g)))
        .map(|&generation| MoldDecision::Start { generation });
    stop.chain(start).collect()
}

impl<F: Factory> Master<'_, F> {
    /// Whether the workers of `generation` are forked from a mold.
    pub(super) fn preloads(generation: &Generation) -> bool {
        preloader(&generation.config).is_some()
    }

    /// Whether a worker of generation `number` can be forked now: at once without preload,
    /// once its mold is ready with it.
    pub(super) fn can_fork(&self, number: u64) -> bool {
        match self.generation(number) {
            Some(g) if Self::preloads(g) => {
                self.molds.iter().any(|m| m.generation == number && m.state == MoldState::Ready)
            }
            _ => true,
        }
    }

    /// Gives each generation kept at strength that preloads its app a mold, stops the molds
    /// of the others, and kills molds that overstay: told to exit and still there, or loading
    /// for longer than `boot_timeout`.
    pub(super) fn manage_molds(&mut self) {
        let now = Instant::now();
        let preloading: Vec<u64> = (self.wanted().iter())
            .filter(|w| self.generation(w.number).is_some_and(Self::preloads))
            .map(|w| w.number)
            .collect();
        let may_fork = now >= self.pool.backoff.next_spawn();
        for decision in decide(&self.molds, &preloading, may_fork) {
            match decision {
                MoldDecision::Start { generation } => {
                    let Some(generation) = self.generation(generation).cloned() else { continue };
                    let Some(preload) = preloader(&generation.config) else { continue };
                    self.start_mold(&generation, preload);
                }
                MoldDecision::Stop { pid } => self.stop_mold(pid),
            }
        }
        self.murder_molds(now);
    }

    /// Forks the mold of `generation`, which loads the app with `preload`.
    fn start_mold(&mut self, generation: &Generation, preload: &'static dyn Preload) {
        if !self.adopting {
            // Before the first mold: the workers it forks must come to the master.
            if let Err(e) = process::become_subreaper() {
                error!("cannot become a child subreaper, so cannot preload: {e}");
                return self.pause_forking("no subreaper");
            }
            self.adopting = true;
        }
        let (ours, theirs) = match Channel::pair() {
            Ok(pair) => pair,
            Err(e) => {
                error!("cannot make a mold's line: {e}");
                return self.pause_forking("no line to a mold");
            }
        };
        match process::fork() {
            Ok(Forked::Parent(pid)) => {
                info!(pid = pid.as_raw(), generation = generation.number, "mold started");
                self.molds.push(Mold {
                    generation: generation.number,
                    pid,
                    line: Some(ours),
                    started: Instant::now(),
                    state: MoldState::Loading { error: None },
                });
            }
            Ok(Forked::Child(mask)) => {
                drop(ours);
                self.become_mold(generation, preload, theirs, mask)
            }
            Err(e) => {
                error!("cannot fork a mold: {e}");
                self.pause_forking("fork failed");
            }
        }
    }

    /// Tells a mold to exit, by closing its line.
    fn stop_mold(&mut self, pid: Pid) {
        let Some(mold) = self.molds.iter_mut().find(|m| m.pid == pid) else { return };
        debug!(pid = pid.as_raw(), generation = mold.generation, "stopping mold");
        mold.line = None;
        mold.state = MoldState::Exiting { deadline: deadline(EXIT_GRACE) };
    }

    /// Kills the molds told to exit that have not, and those loading past `boot_timeout`.
    fn murder_molds(&mut self, now: Instant) {
        let mut slow = Vec::new();
        for m in &mut self.molds {
            match &m.state {
                MoldState::Exiting { deadline } if now >= *deadline => {
                    warn!(pid = m.pid.as_raw(), "mold did not exit in time, killing it");
                    process::send(m.pid, Signal::SIGKILL);
                    m.state = MoldState::Killed;
                }
                MoldState::Loading { .. } => slow.push((m.pid, m.generation, m.started)),
                _ => {}
            }
        }
        for (pid, number, started) in slow {
            let Some(g) = self.generation(number) else { continue };
            let Some(limit) = ServerConfig::limit(g.config.server.boot_timeout) else { continue };
            if now.duration_since(started) < limit {
                continue;
            }
            let why = format!("not loaded within boot_timeout ({} s)", limit.as_secs_f64());
            // SIGABRT first: Python's faulthandler prints where the import is stuck; SIGKILL
            // follows if it is still there.
            error!(pid = pid.as_raw(), generation = number, "mold {why}, killing it with SIGABRT");
            process::send(pid, Signal::SIGABRT);
            if let Some(m) = self.molds.iter_mut().find(|m| m.pid == pid) {
                m.state = MoldState::Exiting { deadline: deadline(super::health::ABORT_GRACE) };
            }
            self.boot_failed(pid.as_raw(), Booting::Mold, number, &why);
        }
    }

    /// Reads what loading molds said: loaded, or why they cannot.
    pub(super) fn read_molds(&mut self) {
        for m in &mut self.molds {
            let MoldState::Loading { error } = &mut m.state else { continue };
            let Some(line) = &m.line else { continue };
            // Its exit is what counts if the line broke: it is reaped.
            while let Ok(Some(reply)) = line.next_reply(None) {
                match reply {
                    Reply::Loaded => {
                        info!(
                            pid = m.pid.as_raw(),
                            generation = m.generation,
                            load_ms = m.started.elapsed().as_millis() as u64,
                            "mold ready: app loaded, workers fork from it"
                        );
                        m.state = MoldState::Ready;
                        break;
                    }
                    Reply::Failed { reason } => *error = Some(reason),
                    other => {
                        debug!(pid = m.pid.as_raw(), "unexpected reply from a mold: {other:?}")
                    }
                }
            }
        }
    }

    /// The descriptors of the lines of loading molds, to wake the master when one speaks.
    pub(super) fn mold_lines(&self) -> Vec<std::os::fd::BorrowedFd<'_>> {
        (self.molds.iter())
            .filter(|m| matches!(m.state, MoldState::Loading { .. }))
            .filter_map(|m| m.line.as_ref().map(Channel::fd))
            .collect()
    }

    /// The next time a mold needs looking at: a deadline to exit, or its `boot_timeout`.
    pub(super) fn next_mold_check(&self) -> Option<Instant> {
        (self.molds.iter())
            .filter_map(|m| match &m.state {
                MoldState::Exiting { deadline } => Some(*deadline),
                MoldState::Loading { .. } => {
                    let g = self.generation(m.generation)?;
                    Some(m.started + ServerConfig::limit(g.config.server.boot_timeout)?)
                }
                _ => None,
            })
            .min()
    }

    /// Has the ready mold of generation `number` fork worker `worker` on scoreboard slot
    /// `slot`, and returns its pid. A mold that does not answer is killed, and replaced.
    pub(super) fn fork_from_mold(
        &mut self,
        number: u64,
        worker: u64,
        slot: usize,
    ) -> Result<Pid, String> {
        let ready = |m: &&mut Mold| m.generation == number && m.state == MoldState::Ready;
        let Some(mold) = self.molds.iter_mut().find(ready) else {
            return Err(format!("generation {number} has no mold ready"));
        };
        let Some(line) = &mold.line else { return Err("the mold is exiting".into()) };
        let asked = line.request(&Request::Fork { worker, slot });
        let deadline = Instant::now() + FORK_ANSWER;
        let answer = asked.and_then(|()| {
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match line.next_reply(Some(left))? {
                    Some(Reply::Forked { worker: w, pid }) if w == worker => break Ok(Ok(pid)),
                    Some(Reply::ForkFailed { worker: w, reason }) if w == worker => {
                        break Ok(Err(reason));
                    }
                    Some(other) => {
                        debug!(pid = mold.pid.as_raw(), "unexpected reply from a mold: {other:?}")
                    }
                    None if left.is_zero() => break Err(std::io::ErrorKind::TimedOut.into()),
                    None => {}
                }
            }
        });
        match answer {
            Ok(forked) => forked,
            Err(e) => {
                error!(
                    pid = mold.pid.as_raw(),
                    generation = number,
                    "the mold did not answer a fork ({e}): killing it, a new one replaces it"
                );
                process::send(mold.pid, Signal::SIGKILL);
                mold.line = None;
                mold.state = MoldState::Killed;
                Err(format!("the mold did not answer: {e}"))
            }
        }
    }

    /// If `pid` is a mold, forgets it and explains its exit; returns whether it was one.
    pub(super) fn reap_mold(&mut self, pid: Pid, exit: Exit) -> bool {
        let Some(i) = self.molds.iter().position(|m| m.pid == pid) else { return false };
        let m = self.molds.remove(i);
        let (raw, generation) = (pid.as_raw(), m.generation);
        match m.state {
            MoldState::Exiting { .. } | MoldState::Killed => {
                info!(pid = raw, generation, "mold exited: {exit}");
            }
            MoldState::Loading { error } => {
                let cause = error.unwrap_or_else(|| format!("{exit} while loading the app"));
                error!(pid = raw, generation, "mold exited: {exit}, cannot load the app: {cause}");
                self.boot_failed(raw, Booting::Mold, generation, &cause);
            }
            MoldState::Ready => {
                let wanted = self.wanted().iter().any(|w| w.number == generation);
                let next = if wanted { "; starting a new one, its workers serve on" } else { "" };
                error!(pid = raw, generation, "mold died unexpectedly: {exit}{next}");
                if wanted {
                    self.pause_forking("mold died");
                }
            }
        }
        true
    }
}

#[cfg(test)]
mod tests;
