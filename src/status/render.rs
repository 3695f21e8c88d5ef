//! A [`Report`] as `forkserve status` prints it: a table for people ([`table`]), or one JSON
//! object for scripts ([`json`]). Pure functions of the report, so that the tests give them a
//! report made by hand.
//!
//! The table fits 100 columns: its columns are as wide as their widest cell, and the request
//! line, last, is cut to what is left. The JSON's keys are snake_case and stable; numbers are
//! numbers, durations are whole milliseconds (`_ms`), memory KiB (`_kib`).

use std::fmt::Write;
use std::time::Duration;

use crate::logging::write_json_str;
use crate::scoreboard::counters::Handshake;
use crate::scoreboard::{ExitCause, ReloadResult, Report, RequestSeen, WorkerView};

/// The widest a line of the table gets, in characters.
const MAX_WIDTH: usize = 100;

/// The fewest characters of a request line shown, however wide the other columns are.
const MIN_REQUEST: usize = 16;

/// The table: the master's line, the totals' line, then one row per worker.
pub(crate) fn table(report: &Report) -> String {
    let mut out = String::new();
    let reloading = if report.reloading { " (reloading)" } else { "" };
    let _ = writeln!(
        out,
        "master {}, generation {}{reloading}, up {}",
        report.master_pid,
        report.generation,
        human(report.uptime)
    );
    let mut facts = vec![
        plural(report.workers.len() as u64, "worker"),
        format!("{} served", plural(report.requests, "request")),
    ];
    if let Some(reloads) = counted(&report.reloads, ReloadResult::ALL.map(ReloadResult::as_str)) {
        facts.push(format!("reloads: {reloads}"));
    }
    if let Some(exits) = counted(&report.exits, ExitCause::ALL.map(ExitCause::as_str)) {
        facts.push(format!("worker exits: {exits}"));
    }
    let _ = writeln!(out, "{}", facts.join(", "));
    if let Some(line) = handshakes(&report.totals.handshakes) {
        let _ = writeln!(out, "{line}");
    }
    if report.workers.is_empty() {
        return out;
    }
    out.push('\n');
    let rows: Vec<[String; 10]> = report.workers.iter().map(row).collect();
    let mut widths = HEADINGS.map(str::len);
    for cells in &rows {
        for (width, cell) in widths.iter_mut().zip(cells) {
            *width = (*width).max(cell.chars().count());
        }
    }
    // What is left of MAX_WIDTH for the request, after the other columns and their gaps.
    let before: usize = widths[..9].iter().map(|w| w + 2).sum();
    let room = MAX_WIDTH.saturating_sub(before).max(MIN_REQUEST);
    write_row(&mut out, &HEADINGS.map(String::from), &widths, room);
    for cells in &rows {
        write_row(&mut out, cells, &widths, room);
    }
    out.push_str(
        "\nCONN: open/parked connections. BUSY: age of the oldest request in flight; \
         * its handler\ncode is running now.\n",
    );
    out
}

const HEADINGS: [&str; 10] =
    ["WORKER", "PID", "GEN", "STATE", "REQUESTS", "CONN", "RSS", "AGE", "BUSY", "REQUEST"];

/// Which columns are text (left-aligned); the others are numbers (right-aligned).
const TEXT: [bool; 10] = [false, false, false, true, false, false, false, false, false, true];

fn row(w: &WorkerView) -> [String; 10] {
    let (busy, request) = match &w.oldest {
        Some(oldest) => {
            let running = w.in_handler.as_ref().is_some_and(|r| r.id == oldest.id);
            let mark = if running { "*" } else { " " };
            let mut line = printable(&oldest.line);
            if w.in_flight > 1 {
                let _ = write!(line, " (+{} more)", w.in_flight - 1);
            }
            (format!("{}{mark}", human(oldest.age)), line)
        }
        None => ("- ".to_string(), String::new()),
    };
    [
        w.worker.to_string(),
        pid_or(w.pid, "-"),
        w.generation.to_string(),
        w.phase.as_str().to_string(),
        w.requests.to_string(),
        format!("{}/{}", w.connections, w.parked),
        memory(w.rss_kib),
        human(w.age),
        busy,
        request,
    ]
}

fn write_row(out: &mut String, cells: &[String; 10], widths: &[usize; 10], room: usize) {
    let mut line = String::new();
    for (i, cell) in cells.iter().enumerate() {
        if i == 9 {
            line.push_str(&cut(cell, room));
        } else if TEXT[i] {
            let _ = write!(line, "{cell:<width$}  ", width = widths[i]);
        } else {
            let _ = write!(line, "{cell:>width$}  ", width = widths[i]);
        }
    }
    out.push_str(line.trim_end());
    out.push('\n');
}

/// `text` in at most `room` characters: cut, with `…` at the end, if longer.
fn cut(text: &str, room: usize) -> String {
    if text.chars().count() <= room {
        return text.to_string();
    }
    let mut short: String = text.chars().take(room.saturating_sub(1)).collect();
    short.push('…');
    short
}

/// A request line as a terminal may show it: control characters (which could move the
/// cursor or change colours) as `?`. hyper lets none through in a method or path; this holds
/// whatever the scoreboard says.
fn printable(line: &str) -> String {
    line.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

/// A worker's pid, or `none` while it is 0: the master claims a slot before the fork and
/// writes the pid right after, so a worker being forked has none yet. Printed as 0 it would be
/// worse than missing: `kill 0` signals the caller's whole process group.
fn pid_or(pid: u32, none: &str) -> String {
    if pid == 0 { none.to_string() } else { pid.to_string() }
}

/// `3 stopped, 1 hung`: the causes counted at least once; `None` if none was.
fn counted(counts: &[u64], names: impl IntoIterator<Item = &'static str>) -> Option<String> {
    let parts: Vec<String> = counts
        .iter()
        .zip(names)
        .filter(|(n, _)| **n > 0)
        .map(|(n, name)| format!("{n} {}", name.replace('_', " ")))
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// `TLS handshakes: 3201 ok, 12 failed (9 timeout, 3 plaintext http)`; `None` before the
/// first (a server without TLS).
fn handshakes(counts: &[u64; Handshake::ALL.len()]) -> Option<String> {
    let ok = counts[Handshake::Ok as usize];
    let failures = &counts[1..];
    let failed = failures.iter().fold(0u64, |sum, n| sum.wrapping_add(*n));
    if ok == 0 && failed == 0 {
        return None;
    }
    let mut line = format!("TLS handshakes: {ok} ok, {failed} failed");
    if let Some(why) = counted(failures, Handshake::ALL[1..].iter().map(|h| h.as_str())) {
        let _ = write!(line, " ({why})");
    }
    Some(line)
}

fn plural(n: u64, word: &str) -> String {
    if n == 1 { format!("1 {word}") } else { format!("{n} {word}s") }
}

/// A duration in a few characters, as precise as a glance needs: `420ms`, `4.2s`, `5m03s`,
/// `3h05m`, `2d03h`.
fn human(d: Duration) -> String {
    let ms = d.as_millis();
    let s = d.as_secs();
    match s {
        _ if ms < 1000 => format!("{ms}ms"),
        0..60 => format!("{:.1}s", d.as_secs_f64()),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// Resident memory from KiB: `812K`, `24.3M`, `1.25G`; `-` before the worker reported any.
fn memory(kib: u64) -> String {
    match kib {
        0 => "-".to_string(),
        1..1024 => format!("{kib}K"),
        1024..1_048_576 => format!("{:.1}M", kib as f64 / 1024.0),
        _ => format!("{:.2}G", kib as f64 / 1_048_576.0),
    }
}

/// The report as one JSON object, on one line:
/// `{"master_pid":…,"generation":…,"reloading":…,"uptime_ms":…,"started_unix_ms":…,
/// "requests_total":…,"reloads":{"completed":…,…},"worker_exits":{"stopped":…,…},
/// "tls_handshakes":{"ok":…,"timeout":…,…},
/// "workers":[{"worker":…,"pid":…,"generation":…,"state":"busy",…,"request":{…}|null,
/// "in_handler":{…}|null}]}` (see the README for every key).
pub(crate) fn json(report: &Report) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "{{\"master_pid\":{},\"generation\":{},\"reloading\":{},\"uptime_ms\":{},\
         \"started_unix_ms\":{},\"requests_total\":{}",
        report.master_pid,
        report.generation,
        report.reloading,
        report.uptime.as_millis(),
        report.started_unix_ms,
        report.requests,
    );
    out.push_str(",\"reloads\":");
    object(&mut out, &report.reloads, ReloadResult::ALL.map(ReloadResult::as_str));
    out.push_str(",\"worker_exits\":");
    object(&mut out, &report.exits, ExitCause::ALL.map(ExitCause::as_str));
    out.push_str(",\"tls_handshakes\":");
    object(&mut out, &report.totals.handshakes, Handshake::ALL.map(Handshake::as_str));
    out.push_str(",\"workers\":[");
    for (i, w) in report.workers.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        worker_json(&mut out, w);
    }
    out.push_str("]}\n");
    out
}

fn worker_json(out: &mut String, w: &WorkerView) {
    let _ = write!(
        out,
        "{{\"worker\":{},\"pid\":{},\"generation\":{},\"state\":\"{}\",\"requests\":{},\
         \"connections\":{},\"parked\":{},\"in_flight\":{},\"rss_kib\":{},\"age_ms\":{}",
        w.worker,
        pid_or(w.pid, "null"),
        w.generation,
        w.phase.as_str(),
        w.requests,
        w.connections,
        w.parked,
        w.in_flight,
        w.rss_kib,
        w.age.as_millis(),
    );
    out.push_str(",\"request\":");
    match &w.oldest {
        Some(oldest) => {
            let running = w.in_handler.as_ref().is_some_and(|r| r.id == oldest.id);
            request_json(out, oldest, Some(running));
        }
        None => out.push_str("null"),
    }
    out.push_str(",\"in_handler\":");
    match &w.in_handler {
        Some(running) => request_json(out, running, None),
        None => out.push_str("null"),
    }
    out.push('}');
}

/// `{"line":"GET /x","age_ms":4200}`, with `"handler_running"` when given.
fn request_json(out: &mut String, r: &RequestSeen, handler_running: Option<bool>) {
    out.push_str("{\"line\":");
    let _ = write_json_str(out, &r.line);
    let _ = write!(out, ",\"age_ms\":{}", r.age.as_millis());
    if let Some(running) = handler_running {
        let _ = write!(out, ",\"handler_running\":{running}");
    }
    out.push('}');
}

/// `{"name":n,…}` for every name, counted or not: a script finds each key every time.
fn object(out: &mut String, counts: &[u64], names: impl IntoIterator<Item = &'static str>) {
    out.push('{');
    for (i, (n, name)) in counts.iter().zip(names).enumerate() {
        let sep = if i > 0 { "," } else { "" };
        let _ = write!(out, "{sep}\"{name}\":{n}");
    }
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scoreboard::WorkerPhase;
    use crate::scoreboard::counters::Totals;

    fn seen(id: u64, line: &str, ms: u64) -> RequestSeen {
        RequestSeen { id, line: line.to_string(), age: Duration::from_millis(ms) }
    }

    fn worker(worker: u64, pid: u32, generation: u64, phase: WorkerPhase) -> WorkerView {
        WorkerView {
            worker,
            generation,
            pid,
            phase,
            requests: 0,
            connections: 0,
            parked: 0,
            in_flight: 0,
            rss_kib: 0,
            age: Duration::from_millis(750),
            oldest: None,
            in_handler: None,
        }
    }

    /// A server in the middle of a reload: an old worker idle, one busy in a handler with two
    /// more requests behind, one busy waiting (its handler returned), a new one booting.
    fn reloading() -> Report {
        let idle = WorkerView {
            requests: 1200,
            connections: 2,
            parked: 1,
            rss_kib: 12_390,
            age: Duration::from_secs(3661),
            ..worker(3, 4130, 1, WorkerPhase::Idle)
        };
        let long = format!("POST /api/\"quoted\"/{}", "x".repeat(100));
        let stuck = WorkerView {
            requests: 331,
            connections: 3,
            in_flight: 3,
            rss_kib: 1_400_000,
            age: Duration::from_secs(125),
            oldest: Some(seen(9, &long, 4_200)),
            in_handler: Some(seen(9, &long, 4_200)),
            ..worker(4, 4131, 1, WorkerPhase::Busy)
        };
        let waiting = WorkerView {
            requests: 1,
            connections: 1,
            in_flight: 1,
            rss_kib: 900,
            age: Duration::from_secs(59),
            oldest: Some(seen(1, "GET /sleep/5000", 420)),
            ..worker(12, 4190, 2, WorkerPhase::Busy)
        };
        Report {
            master_pid: 4123,
            generation: 2,
            reloading: true,
            uptime: Duration::from_secs(3662),
            started_unix_ms: 1_764_495_642_000,
            reloads: [1, 0, 0, 0],
            exits: [2, 0, 1, 0, 0],
            totals: Totals { handshakes: [3201, 9, 3, 0, 0], ..Totals::default() },
            requests: 1532,
            workers: vec![idle, stuck, waiting, worker(13, 4191, 2, WorkerPhase::Booting)],
        }
    }

    #[test]
    fn the_table_is_aligned_and_fits_100_columns() {
        let table = table(&reloading());
        let expected = "\
master 4123, generation 2 (reloading), up 1h01m
4 workers, 1532 requests served, reloads: 1 completed, worker exits: 2 stopped, 1 hung
TLS handshakes: 3201 ok, 12 failed (9 timeout, 3 plaintext http)

WORKER   PID  GEN  STATE    REQUESTS  CONN    RSS    AGE    BUSY  REQUEST
     3  4130    1  idle         1200   2/1  12.1M  1h01m      -
     4  4131    1  busy          331   3/0  1.34G  2m05s   4.2s*  POST /api/\"quoted\"/xxxxxxxxxxxxxx…
    12  4190    2  busy            1   1/0   900K  59.0s  420ms   GET /sleep/5000
    13  4191    2  booting         0   0/0      -  750ms      -

CONN: open/parked connections. BUSY: age of the oldest request in flight; * its handler
code is running now.
";
        assert_eq!(table, expected, "\n{table}");
        assert!(table.lines().all(|l| l.chars().count() <= MAX_WIDTH), "{table}");
    }

    #[test]
    fn a_server_without_workers_and_history_is_two_lines() {
        let report = Report {
            reloading: false,
            reloads: [0; 4],
            exits: [0; 5],
            totals: Totals::default(),
            requests: 0,
            workers: Vec::new(),
            ..reloading()
        };
        assert_eq!(
            table(&report),
            "master 4123, generation 2, up 1h01m\n0 workers, 0 requests served\n"
        );
    }

    #[test]
    fn the_json_has_every_fact_under_stable_keys() {
        let text = json(&reloading());
        assert_eq!(text.lines().count(), 1, "one line: {text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["master_pid"], 4123);
        assert_eq!((v["generation"].as_u64(), v["reloading"].as_bool()), (Some(2), Some(true)));
        assert_eq!(v["uptime_ms"], 3_662_000);
        assert_eq!(v["started_unix_ms"], 1_764_495_642_000u64);
        assert_eq!(v["requests_total"], 1532);
        assert_eq!(
            v["reloads"],
            serde_json::json!({"completed": 1, "rejected": 0, "rolled_back": 0, "superseded": 0})
        );
        assert_eq!(
            v["worker_exits"],
            serde_json::json!({"stopped": 2, "recycled": 0, "hung": 1, "crashed": 0, "boot_failure": 0})
        );
        assert_eq!(
            v["tls_handshakes"],
            serde_json::json!({"ok": 3201, "timeout": 9, "plaintext_http": 3, "protocol_error": 0, "closed": 0})
        );
        let workers = v["workers"].as_array().unwrap();
        assert_eq!(workers.len(), 4);
        assert_eq!(
            workers[0],
            serde_json::json!({
                "worker": 3, "pid": 4130, "generation": 1, "state": "idle", "requests": 1200,
                "connections": 2, "parked": 1, "in_flight": 0, "rss_kib": 12390,
                "age_ms": 3_661_000, "request": null, "in_handler": null
            })
        );
        let stuck = &workers[1]["request"];
        assert!(
            stuck["line"].as_str().unwrap().starts_with("POST /api/\"quoted\"/xxx"),
            "whole, escaped"
        );
        assert_eq!(
            (stuck["age_ms"].as_u64(), stuck["handler_running"].as_bool()),
            (Some(4200), Some(true))
        );
        assert_eq!(workers[1]["in_handler"]["age_ms"], 4200);
        assert_eq!(workers[2]["request"]["handler_running"], false);
        assert_eq!(workers[2]["in_handler"], serde_json::Value::Null);
        assert_eq!(workers[3]["state"], "booting");
    }

    #[test]
    fn a_worker_being_forked_has_no_pid_rather_than_pid_0() {
        let forking = worker(14, 0, 2, WorkerPhase::Booting);
        let report = Report { workers: vec![forking], ..reloading() };
        let v: serde_json::Value = serde_json::from_str(&json(&report)).unwrap();
        assert_eq!(v["workers"][0]["pid"], serde_json::Value::Null, "{v}");
        let table = table(&report);
        let row = table.lines().find(|l| l.trim_start().starts_with("14 ")).unwrap();
        assert_eq!(row.split_whitespace().nth(1), Some("-"), "{table}");
    }

    #[test]
    fn durations_memory_and_lines_are_short_and_safe() {
        let cases =
            [(0, "0ms"), (999, "999ms"), (1000, "1.0s"), (59_940, "59.9s"), (60_000, "1m00s")];
        for (ms, text) in cases {
            assert_eq!(human(Duration::from_millis(ms)), text);
        }
        assert_eq!(human(Duration::from_secs(86_400 + 7200)), "1d02h");
        assert_eq!(
            (memory(0), memory(1023), memory(1024)),
            ("-".into(), "1023K".into(), "1.0M".into())
        );
        assert_eq!(cut("héllo wörld", 5), "héll…");
        assert_eq!(cut("short", 5), "short");
        assert_eq!(printable("GET /\x1b[31mred\n"), "GET /?[31mred?");
    }
}
