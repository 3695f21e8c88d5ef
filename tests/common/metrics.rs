//! Reading a server's Prometheus endpoint: where it listens (from its `listening for metrics`
//! log line), one scrape, and the samples of the text format looked up by series.

use std::net::SocketAddr;

use super::http::{self, Response};
use super::{Server, wait_until};

/// The address of the server's metrics endpoint.
pub fn metrics_addr(server: &Server) -> SocketAddr {
    let line = server.wait_for("listening for metrics address=");
    let addr = line.split("address=").nth(1).unwrap().split_whitespace().next().unwrap();
    addr.parse().unwrap_or_else(|e| panic!("bad address in {line:?}: {e}"))
}

/// One scrape, on a fresh connection.
pub fn scrape(addr: SocketAddr) -> std::io::Result<Response> {
    http::get(addr, "/metrics")
}

/// One scrape that must succeed, as samples.
pub fn samples(addr: SocketAddr) -> Samples {
    let response = scrape(addr).expect("scrape");
    assert_eq!(response.status, 200, "{}", response.text());
    Samples(response.text())
}

/// Scrapes until `ready` holds of the samples, for up to the harness's wait; panics with the
/// last scrape otherwise.
pub fn samples_when(addr: SocketAddr, what: &str, ready: impl Fn(&Samples) -> bool) -> Samples {
    let mut last = None;
    wait_until(|| {
        let s = samples(addr);
        if ready(&s) {
            return Some(s);
        }
        last = Some(s);
        None
    })
    .unwrap_or_else(|| {
        panic!("never {what}; last scrape:\n{}", last.map_or(String::new(), |s| s.0))
    })
}

/// A scrape's text.
pub struct Samples(pub String);

impl Samples {
    /// The value of the sample written exactly as `series` (name, and labels in the order the
    /// endpoint writes them); `None` if there is none.
    pub fn get(&self, series: &str) -> Option<f64> {
        self.0.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().expect("a number"))
        })
    }

    /// Like [`Samples::get`], for a series that must be there.
    pub fn value(&self, series: &str) -> f64 {
        self.get(series).unwrap_or_else(|| panic!("no {series} in:\n{}", self.0))
    }

    /// The sum of every sample of the metric `name` whose labels contain all of `labels`
    /// (`key="value"` each).
    pub fn sum(&self, name: &str, labels: &[&str]) -> f64 {
        self.0
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
                (metric == name && labels.iter().all(|want| rest.contains(want)))
                    .then(|| value.parse::<f64>().expect("a number"))
            })
            .sum()
    }
}
