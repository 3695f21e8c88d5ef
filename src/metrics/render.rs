//! The scoreboard's [`Report`] as Prometheus's text exposition format 0.0.4: each metric
//! family with its `# HELP` and `# TYPE`, label values escaped. Every label value of a fixed
//! set (methods, status classes, worker states, exit causes, reload results) is written, 0
//! included, so that a series exists from the first scrape and `rate()` sees its first
//! increase. Pure: it reads nothing but its arguments.

use std::fmt::Write;

use super::Queue;
use crate::scoreboard::counters::{BUCKETS_US, CLASSES, Handshake, METHODS};
use crate::scoreboard::{ExitCause, ReloadResult, Report, WorkerPhase, WorkerView};

/// The whole exposition.
pub(crate) fn render(report: &Report, queues: &[Queue], version: &str) -> String {
    let mut out = Out(String::with_capacity(8192 + report.workers.len() * 1024));
    let t = &report.totals;

    out.family("forkserve_requests_total", "counter", "Requests that ended, by method (OTHER for any other) and status class (none: cut before any response started)");
    for (m, method) in METHODS.iter().enumerate() {
        for (c, class) in CLASSES.iter().enumerate() {
            out.sample(
                "forkserve_requests_total",
                &[("method", method), ("status", class)],
                t.requests[m][c],
            );
        }
    }

    let name = "forkserve_request_duration_seconds";
    out.family(name, "histogram", "Time from a request's start to its response's last byte written (or its connection closed)");
    let mut cumulative = 0;
    for (bound, n) in BUCKETS_US.iter().zip(&t.buckets) {
        cumulative += n;
        let le = (*bound as f64 / 1e6).to_string();
        out.sample("forkserve_request_duration_seconds_bucket", &[("le", &le)], cumulative);
    }
    let count = t.count();
    out.sample("forkserve_request_duration_seconds_bucket", &[("le", "+Inf")], count);
    out.sample_f64("forkserve_request_duration_seconds_sum", &[], t.duration_us as f64 / 1e6);
    out.sample("forkserve_request_duration_seconds_count", &[], count);

    out.counter("forkserve_request_body_bytes_total", "Bytes of request bodies read", t.bytes_in);
    out.counter(
        "forkserve_response_body_bytes_total",
        "Bytes of response bodies written (heads not counted)",
        t.bytes_out,
    );
    out.counter(
        "forkserve_responses_cut_total",
        "Requests whose response did not go out whole: the connection closed first",
        t.cut,
    );

    render_handshakes(&mut out, &t.handshakes);

    let sum = |f: fn(&WorkerView) -> u64| report.workers.iter().map(f).sum::<u64>();
    out.gauge(
        "forkserve_requests_in_flight",
        "Requests started and not ended, in every worker",
        sum(|w| w.in_flight.into()),
    );
    out.gauge(
        "forkserve_connections_open",
        "Connections open, in every worker",
        sum(|w| w.connections.into()),
    );
    out.gauge(
        "forkserve_connections_parked",
        "Idle keep-alive connections parked (their buffers let go), among those open",
        sum(|w| w.parked.into()),
    );

    out.family("forkserve_workers", "gauge", "Workers alive, by state");
    for phase in WorkerPhase::ALL {
        let n = report.workers.iter().filter(|w| w.phase == phase).count() as u64;
        out.sample("forkserve_workers", &[("state", phase.as_str())], n);
    }
    render_workers(&mut out, &report.workers);

    out.family("forkserve_worker_exits_total", "counter", "Workers that exited, by cause: stopped (told to), recycled (max_requests, memory, lifetime, the app), hung, crashed, boot_failure");
    for (cause, n) in ExitCause::ALL.iter().zip(report.exits) {
        out.sample("forkserve_worker_exits_total", &[("cause", cause.as_str())], n);
    }
    out.family("forkserve_reloads_total", "counter", "Reloads (HUP) that ended, by result: completed, rejected (the config), rolled_back (the new workers could not boot), superseded (a newer reload took its place)");
    for (result, n) in ReloadResult::ALL.iter().zip(report.reloads) {
        out.sample("forkserve_reloads_total", &[("result", result.as_str())], n);
    }
    out.gauge(
        "forkserve_generation",
        "The generation serving, or being started while a reload is in progress",
        report.generation,
    );
    out.gauge(
        "forkserve_reload_in_progress",
        "1 while a reload is in progress",
        report.reloading.into(),
    );

    out.family(
        "forkserve_listen_queue_depth",
        "gauge",
        "Connections waiting to be accepted on a listening socket",
    );
    for q in queues {
        out.sample("forkserve_listen_queue_depth", &[("listener", &q.listener)], q.depth.into());
    }
    out.family(
        "forkserve_listen_queue_limit",
        "gauge",
        "How many connections a listening socket's queue holds (backlog, capped by somaxconn)",
    );
    for q in queues {
        out.sample("forkserve_listen_queue_limit", &[("listener", &q.listener)], q.limit.into());
    }

    out.family(
        "forkserve_start_time_seconds",
        "gauge",
        "When the master started, in seconds since the Unix epoch",
    );
    out.sample_f64("forkserve_start_time_seconds", &[], report.started_unix_ms as f64 / 1e3);
    out.family(
        "forkserve_build_info",
        "gauge",
        "The forkserve version serving, as a label (always 1)",
    );
    out.sample("forkserve_build_info", &[("version", version)], 1);
    out.0
}

/// TLS handshakes: done or failed, and the failures by reason (written on a server without
/// TLS too, all 0, as every fixed set is).
fn render_handshakes(out: &mut Out, counts: &[u64; Handshake::ALL.len()]) {
    let name = "forkserve_tls_handshakes_total";
    out.family(name, "counter", "TLS handshakes that ended, by result: ok (done), failed (see forkserve_tls_handshake_failures_total)");
    let ok = counts[Handshake::Ok as usize];
    let failed = counts.iter().fold(0u64, |sum, n| sum.wrapping_add(*n)).wrapping_sub(ok);
    out.sample(name, &[("result", "ok")], ok);
    out.sample(name, &[("result", "failed")], failed);
    let name = "forkserve_tls_handshake_failures_total";
    out.family(name, "counter", "TLS handshakes that failed, by reason: timeout (not done by header_timeout), plaintext_http (plain HTTP on a TLS port), protocol_error (refused by rustls), closed (by the client first, or a draining worker)");
    for (outcome, n) in Handshake::ALL.iter().zip(counts).skip(1) {
        out.sample(name, &[("reason", outcome.as_str())], *n);
    }
}

/// How one of a worker's values is read from its view.
type PerWorker = fn(&WorkerView) -> u64;

/// The metrics of each worker alive, labelled with its id, generation and pid. A worker being
/// forked has no pid yet (its slot is claimed first): it is left out for the microseconds
/// that takes, rather than written as a short-lived series with `pid="0"`
/// (`forkserve_workers` counts it as booting).
fn render_workers(out: &mut Out, workers: &[WorkerView]) {
    let workers: Vec<&WorkerView> = workers.iter().filter(|w| w.pid != 0).collect();
    let ids: Vec<[String; 3]> = workers
        .iter()
        .map(|w| [w.worker.to_string(), w.generation.to_string(), w.pid.to_string()])
        .collect();
    fn labels(id: &[String; 3]) -> [(&str, &str); 3] {
        [("worker", &id[0]), ("generation", &id[1]), ("pid", &id[2])]
    }
    out.family("forkserve_worker_state", "gauge", "Each worker's state: 1 for the one it is in (booting, idle, busy, draining), 0 for the others");
    for (w, id) in workers.iter().zip(&ids) {
        for phase in WorkerPhase::ALL {
            let [a, b, c] = labels(id);
            out.sample(
                "forkserve_worker_state",
                &[a, b, c, ("state", phase.as_str())],
                u64::from(w.phase == phase),
            );
        }
    }
    let per_worker: [(&str, &str, &str, PerWorker); 3] = [
        (
            "forkserve_worker_resident_memory_bytes",
            "gauge",
            "Each worker's resident memory, as it last read it",
            |w| w.rss_kib * 1024,
        ),
        ("forkserve_worker_requests_total", "counter", "Requests each worker has started", |w| {
            w.requests
        }),
        ("forkserve_worker_connections", "gauge", "Connections each worker has open", |w| {
            w.connections.into()
        }),
    ];
    for (name, kind, help, value) in per_worker {
        out.family(name, kind, help);
        for (w, id) in workers.iter().zip(&ids) {
            out.sample(name, &labels(id), value(w));
        }
    }
}

/// The text being written.
struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        // (Writing to a String cannot fail.)
        let _ = writeln!(self.0, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, "counter", help);
        self.sample(name, &[], value);
    }

    fn gauge(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, "gauge", help);
        self.sample(name, &[], value);
    }

    fn labels(&mut self, name: &str, labels: &[(&str, &str)]) {
        self.0.push_str(name);
        if labels.is_empty() {
            return;
        }
        self.0.push('{');
        for (i, (key, value)) in labels.iter().enumerate() {
            if i > 0 {
                self.0.push(',');
            }
            let _ = write!(self.0, "{key}=\"{}\"", escape_label(value));
        }
        self.0.push('}');
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.labels(name, labels);
        let _ = writeln!(self.0, " {value}");
    }

    fn sample_f64(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.labels(name, labels);
        let _ = writeln!(self.0, " {value}");
    }
}

/// A label value as the format writes it: backslash, double quote and line feed escaped.
fn escape_label(value: &str) -> String {
    value.replace('\\', r"\\").replace('"', "\\\"").replace('\n', r"\n")
}

/// A `# HELP` text: backslash and line feed escaped.
fn escape_help(text: &str) -> String {
    text.replace('\\', r"\\").replace('\n', r"\n")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::scoreboard::counters::{Counted, method_index};
    use crate::scoreboard::{Board, Scoreboard};

    /// The value of the sample written exactly as `series` (name and labels).
    fn value(text: &str, series: &str) -> f64 {
        let line = text.lines().find(|l| l.rsplit_once(' ').is_some_and(|(s, _)| s == series));
        let line = line.unwrap_or_else(|| panic!("no {series} in:\n{text}"));
        let number = line.rsplit_once(" ").unwrap().1;
        number.parse().unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    #[test]
    fn a_worker_being_forked_is_counted_as_booting_without_series_of_its_own() {
        let board = Scoreboard::new().unwrap();
        // Claimed, not forked yet: no pid.
        board.claim(9, 1).unwrap();
        let text = render(&board.report(), &[], "1.2.3");
        assert_eq!(value(&text, r#"forkserve_workers{state="booting"}"#), 1.0);
        assert!(!text.contains(r#"worker="9""#), "{text}");
        assert!(!text.contains(r#"pid="0""#), "{text}");
    }

    #[test]
    fn the_report_is_rendered_with_totals_a_cumulative_histogram_and_every_state() {
        let board = Scoreboard::new().unwrap();
        board.set_generation(2, false);
        board.worker_exited(ExitCause::Crashed);
        let index = board.claim(5, 2).unwrap();
        let worker = Board::new(board.all(), index, 64);
        worker.booted();
        let counters = worker.counters();
        for (method, status, ms) in
            [("GET", Some(200), 1), ("GET", Some(404), 30), ("BREW", None, 2)]
        {
            counters.record(&Counted {
                method: Some(method_index(Some(method))),
                status,
                duration: Duration::from_millis(ms),
                bytes_in: 7,
                bytes_out: 100,
                cut: status.is_none(),
            });
        }
        counters.handshake(Handshake::Ok);
        counters.handshake(Handshake::PlaintextHttp);
        counters.handshake(Handshake::PlaintextHttp);
        worker.connection_opened();
        worker.connection_parked();
        let queues = [Queue { listener: "127.0.0.1:8000".into(), depth: 3, limit: 128 }];
        let text = render(&board.report(), &queues, "1.2.3");

        assert_eq!(value(&text, r#"forkserve_requests_total{method="GET",status="2xx"}"#), 1.0);
        assert_eq!(value(&text, r#"forkserve_requests_total{method="GET",status="4xx"}"#), 1.0);
        assert_eq!(value(&text, r#"forkserve_requests_total{method="OTHER",status="none"}"#), 1.0);
        assert_eq!(value(&text, r#"forkserve_requests_total{method="PUT",status="5xx"}"#), 0.0);
        let bucket = |le: &str| {
            value(&text, &format!("forkserve_request_duration_seconds_bucket{{le=\"{le}\"}}"))
        };
        assert_eq!(bucket("0.0005"), 0.0);
        assert_eq!(bucket("0.001"), 1.0, "1 ms is within 0.001 (le)");
        assert_eq!(bucket("0.0025"), 2.0, "cumulative");
        assert_eq!(bucket("0.025"), 2.0);
        assert_eq!(bucket("0.05"), 3.0);
        assert_eq!(bucket("10"), 3.0);
        assert_eq!(bucket("+Inf"), 3.0);
        assert_eq!(value(&text, "forkserve_request_duration_seconds_count"), 3.0);
        assert!((value(&text, "forkserve_request_duration_seconds_sum") - 0.033).abs() < 1e-9);
        assert_eq!(value(&text, "forkserve_request_body_bytes_total"), 21.0);
        assert_eq!(value(&text, "forkserve_response_body_bytes_total"), 300.0);
        assert_eq!(value(&text, "forkserve_responses_cut_total"), 1.0);
        let handshakes = |labels: &str| value(&text, &format!("forkserve_tls_{labels}"));
        assert_eq!(handshakes(r#"handshakes_total{result="ok"}"#), 1.0);
        assert_eq!(handshakes(r#"handshakes_total{result="failed"}"#), 2.0);
        assert_eq!(handshakes(r#"handshake_failures_total{reason="plaintext_http"}"#), 2.0);
        assert_eq!(handshakes(r#"handshake_failures_total{reason="timeout"}"#), 0.0);
        assert!(!text.contains(r#"reason="ok""#), "{text}");
        assert_eq!(value(&text, "forkserve_connections_open"), 1.0);
        assert_eq!(value(&text, "forkserve_connections_parked"), 1.0);
        assert_eq!(value(&text, r#"forkserve_workers{state="idle"}"#), 1.0);
        assert_eq!(value(&text, r#"forkserve_workers{state="draining"}"#), 0.0);
        // (The worker's board records its own pid: this process's.)
        let me = format!(r#"worker="5",generation="2",pid="{}""#, std::process::id());
        assert_eq!(value(&text, &format!("forkserve_worker_state{{{me},state=\"idle\"}}")), 1.0);
        assert_eq!(value(&text, &format!("forkserve_worker_state{{{me},state=\"busy\"}}")), 0.0);
        assert_eq!(value(&text, &format!("forkserve_worker_connections{{{me}}}")), 1.0);
        assert!(value(&text, &format!("forkserve_worker_resident_memory_bytes{{{me}}}")) > 0.0);
        assert_eq!(value(&text, r#"forkserve_worker_exits_total{cause="crashed"}"#), 1.0);
        assert_eq!(value(&text, r#"forkserve_worker_exits_total{cause="hung"}"#), 0.0);
        assert_eq!(value(&text, r#"forkserve_reloads_total{result="rejected"}"#), 0.0);
        assert_eq!(value(&text, "forkserve_generation"), 2.0);
        assert_eq!(value(&text, "forkserve_reload_in_progress"), 0.0);
        let listener = r#"{listener="127.0.0.1:8000"}"#;
        assert_eq!(value(&text, &format!("forkserve_listen_queue_depth{listener}")), 3.0);
        assert_eq!(value(&text, &format!("forkserve_listen_queue_limit{listener}")), 128.0);
        assert!(value(&text, "forkserve_start_time_seconds") > 1.6e9);
        assert_eq!(value(&text, r#"forkserve_build_info{version="1.2.3"}"#), 1.0);

        // Every family has its HELP and TYPE, once, before its samples.
        let mut declared = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap();
                assert!(!declared.contains(&name.to_string()), "{name} declared twice");
                declared.push(name.to_string());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                let family = declared.last().unwrap();
                assert!(name.starts_with(family.as_str()), "{line} outside its family");
            }
        }
        worker.connection_unparked();
        worker.connection_closed();
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        assert_eq!(escape_label("unix:/a\"b\\c\nd"), r#"unix:/a\"b\\c\nd"#);
        assert_eq!(escape_help("a\\b\nc \"d\""), r#"a\\b\nc "d""#);
    }
}
