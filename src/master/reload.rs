//! Generations and reloading (`HUP`). Workers belong to a *generation*: the config they were
//! started with. A reload re-reads the config, tests it (and binds its new addresses) first,
//! and keeps the old one if it fails, as nginx does; if it is good, it starts a new generation
//! beside the serving one. The serving one is stopped only once every new worker is ready, is
//! kept at strength meanwhile, and serves on alone if the new one cannot boot (a rollback).

use std::sync::Arc;
use std::time::Instant;

use tracing::{error, info, warn};

use super::phase::{Generation, Reload};
use super::pool::{Decision, Why};
use super::{Master, warn_fd_headroom};
use crate::app::Factory;
use crate::config::ConfigSource;
use crate::listener::Addr;
use crate::pidfile::Pidfile;
use crate::scoreboard::ReloadResult;

impl<F: Factory> Master<'_, F> {
    /// Re-reads the config and, if it is valid and its new addresses can be bound, starts a
    /// new generation with it ([`Master::finish_reload`] stops the old one once the new one is
    /// ready). If not, logs why and changes nothing.
    pub(super) fn reload(&mut self) {
        let started = Instant::now();
        if self.upgrading.booting().is_some() {
            return warn!("hup ignored: a binary upgrade is under way");
        }
        if let Some(n) = self.notifier() {
            n.reloading();
        }
        match self.source.as_ref().and_then(ConfigSource::path) {
            Some(path) => info!(config = %path.display(), "reloading"),
            None => info!("reloading"),
        }
        let config = match &self.source {
            Some(source) => source.load(),
            None => Ok((*self.current.config).clone()),
        };
        let config = match config {
            Ok(config) => config,
            Err(e) => {
                let duration_ms = started.elapsed().as_millis() as u64;
                error!(duration_ms, "reload rejected: {e}");
                return self.reload_rejected();
            }
        };
        if let Some(tls) = config.tls_material() {
            tls.warn_expiring();
        }
        // The new log file is opened first (the master's lines go there from now on): a path
        // that cannot be opened is a config that cannot serve as asked.
        if let Err(e) = self.log.apply(&config.log) {
            error!("reload rejected: log file {e}");
            return self.reload_rejected();
        }
        // New addresses are bound now; the ones dropped stay open until the reload completes,
        // for the old generation's replacements and in case it has to take over again.
        if let Err(e) = self.listeners.open_missing(&Addr::all(&config), config.server.backlog) {
            if let Err(e) = self.log.apply(&self.current.config.log) {
                error!("keeping the new log file: {e}");
            }
            error!(duration_ms = started.elapsed().as_millis() as u64, "reload rejected: {e}");
            return self.reload_rejected();
        }
        warn_fd_headroom(&config);
        let new = Generation {
            number: self.next_generation,
            target: config.server.workers.resolve(),
            config: Arc::new(config),
        };
        self.next_generation += 1;
        let superseded = std::mem::replace(&mut self.current, new);
        if let Some(reload) = self.phase.reload_mut() {
            // A reload under way is overtaken: its workers are not needed, and the generation
            // to fall back to is still the one that served before it.
            reload.started = started;
            self.execute_all(self.pool.retire_generation(superseded.number, &Why::Superseded));
            // It ended here, neither completed nor rolled back: counted, so that every reload
            // started is counted once.
            self.scoreboard.reload_ended(ReloadResult::Superseded);
        } else {
            let mut previous = superseded;
            if self.upgrading.workers_stopped() {
                // After WINCH the previous generation has no workers to keep.
                previous.target = 0;
            }
            self.phase.begin_reload(Reload { started, previous });
        }
        // After WINCH, a reload brings workers back (as in nginx).
        self.upgrading.workers_return();
        // A new config may fix what made workers crash: try it at once.
        self.pool.backoff.retry_now(Instant::now());
        self.publish_generation();
        info!(
            generation = self.current.number,
            workers = self.current.target,
            "starting new generation"
        );
    }

    /// A reload was refused before anything changed: the old generation serves on.
    fn reload_rejected(&mut self) {
        self.scoreboard.reload_ended(ReloadResult::Rejected);
        self.notify_ready();
    }

    /// Publishes the generation serving and whether a reload is under way, for the metrics
    /// and `forkserve status`.
    pub(super) fn publish_generation(&self) {
        self.scoreboard.set_generation(self.current.number, self.phase.reload().is_some());
    }

    /// Once every worker of the new generation is ready, stops the older ones, and closes the
    /// addresses the new config dropped.
    pub(super) fn finish_reload(&mut self) {
        let Some(&Reload { started, .. }) = self.phase.reload() else { return };
        if self.pool.ready_workers(self.current.number) < self.current.target {
            return;
        }
        self.phase.end_reload();
        let old = self.pool.complete_reload(self.current.number);
        let stopping = old.len();
        self.execute_all(old);
        let config = &self.current.config;
        self.listeners.retain_only(&Addr::all(config), config.server.backlog);
        self.move_pidfile();
        self.scoreboard.reload_ended(ReloadResult::Completed);
        self.publish_generation();
        info!(
            generation = self.current.number,
            stopping,
            duration_ms = started.elapsed().as_millis() as u64,
            "reload complete"
        );
        self.notify_ready();
    }

    /// The new generation cannot boot: stops it, and the previous generation serves on with
    /// its config.
    pub(super) fn roll_back(&mut self, why: &str) {
        let Some(reload) = self.phase.end_reload() else { return };
        let failed = std::mem::replace(&mut self.current, reload.previous);
        self.execute_all(self.pool.retire_generation(failed.number, &Why::RolledBack));
        let config = &self.current.config;
        self.listeners.retain_only(&Addr::all(config), config.server.backlog);
        if let Err(e) = self.log.apply(&self.current.config.log) {
            error!("rolling back: keeping the new log file: {e}");
        }
        self.scoreboard.reload_ended(ReloadResult::RolledBack);
        self.publish_generation();
        error!(
            generation = failed.number,
            serving = self.current.number,
            duration_ms = reload.started.elapsed().as_millis() as u64,
            "reload failed, rolled back: {why}"
        );
        self.notify_ready();
    }

    pub(super) fn execute_all(&mut self, decisions: Vec<Decision>) {
        for decision in decisions {
            // Retiring forks nothing: no decision here can be held back.
            let _ = self.execute(decision);
        }
    }

    /// Applies a changed `pidfile` setting: the new file is written before the old one goes.
    fn move_pidfile(&mut self) {
        if self.upgrading.pid().is_some() {
            // The pidfile is PIDFILE.oldbin while a new master holds PIDFILE.
            return;
        }
        let wanted = self.current.config.server.pidfile.as_deref();
        if wanted == self.pidfile.as_ref().map(Pidfile::path) {
            return;
        }
        let new = match wanted.map(Pidfile::create).transpose() {
            Ok(new) => new,
            Err(e) => return error!("keeping the old pidfile: {e}"),
        };
        if let Some(old) = std::mem::replace(&mut self.pidfile, new) {
            old.remove();
        }
    }
}
