//! The one event every request ends in: [`RequestEnd`], handed to the hooks an app factory
//! registers with [`WorkerContext::on_request_end`](crate::WorkerContext::on_request_end).
//! Every request a worker reads the head of ends in exactly one: answered by the app, by the
//! service stack (a `500` for a panic, a `504` for `request_timeout`, the status the gate gave
//! a broken body), refused by the gate itself (`400`, `408`, `413`, `414`, `431`, `501`, `505`)
//! or by hyper behind it (a bare `400` or `414` for a target the gate let through and
//! `http::Uri` cannot hold), or cut when its connection closed before the response's last
//! byte was written. A response is complete once that byte has left the worker (into the
//! kernel's socket buffer), not when the app's last frame was handed over: the event of a
//! response still in the worker's buffers, or held back with a pipelined batch, waits.
//!
//! Nothing is built for the event unless a hook is registered: no clock reading, no copy of a
//! header, no formatting. The event borrows what the request already holds.

use std::borrow::Cow;
use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, StatusCode, Uri, Version};

/// How a request ended: one event per request, whoever answered it. Everything an access log
/// line in nginx's `combined` format, or a request counter and latency histogram, needs is
/// here; the time of day is the hook's to read (the event is handed over as the request ends).
///
/// ```no_run
/// # fn factory(worker: &forkserve::WorkerContext) {
/// worker.on_request_end(|e: &forkserve::RequestEnd<'_>| {
///     eprintln!(
///         "{} \"{} {} {:?}\" {} {} {:?}",
///         e.client().map_or("-".into(), |a| a.to_string()),
///         e.method().unwrap_or("-"),
///         e.target().unwrap_or("-".into()),
///         e.version(),
///         e.status().map_or(0, |s| s.as_u16()),
///         e.response_body_bytes(),
///         e.duration(),
///     );
/// });
/// # }
/// ```
#[derive(Debug)]
pub struct RequestEnd<'a> {
    pub(crate) method: Option<&'a str>,
    pub(crate) target: Target<'a>,
    pub(crate) version: Option<Version>,
    pub(crate) status: Option<StatusCode>,
    pub(crate) request_body_bytes: u64,
    pub(crate) response_body_bytes: u64,
    pub(crate) duration: Duration,
    pub(crate) client: Option<IpAddr>,
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) referer: Option<&'a HeaderValue>,
    pub(crate) user_agent: Option<&'a HeaderValue>,
    /// The request's and the response's headers a hook asked for (see
    /// [`Hooks::want_header`]), in the order of the sink's lists; empty where not read (a
    /// request the gate refused, a response that never started).
    pub(crate) request_headers: &'a [Option<HeaderValue>],
    pub(crate) response_headers: &'a [Option<HeaderValue>],
    pub(crate) worker: u64,
    pub(crate) answered_by: AnsweredBy,
    pub(crate) ending: Ending,
}

/// A request's target, as far as it is known.
#[derive(Debug)]
pub(crate) enum Target<'a> {
    None,
    Uri(&'a Uri),
    /// From a head the gate refused: as the client wrote it.
    Raw(&'a str),
}

/// Who answered a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AnsweredBy {
    /// The app's service (its response, or the `500`/`504` forkserve put in its place).
    App,
    /// The gate, which refused the request before the app saw it; also hyper's own bare `400`
    /// or `414` to a head the gate let through (a target `http::Uri` cannot hold).
    Gate,
}

/// Whether a request's response went out whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Ending {
    /// The response's last byte was written to the connection: it left the worker, into the
    /// kernel's socket buffer (whether the client then read it, no server can tell). The
    /// event is sent then, not when the app's body ended: a response that waits in the
    /// worker's buffers for a slow client, or is held back to be written with the rest of a
    /// pipelined batch, is not complete yet.
    Complete,
    /// The connection closed before the response's last byte was written (the client went
    /// away, `send_timeout`, `request_timeout` while sending, a broken response body):
    /// [`RequestEnd::response_body_bytes`] says how much of the body was written (where the
    /// worker lost part of the response with the connection, counted as the body's last
    /// bytes). Without a status, no response had started.
    Cut,
}

impl RequestEnd<'_> {
    /// The method; `None` for a request the gate refused before it had a readable request line.
    pub fn method(&self) -> Option<&str> {
        self.method
    }

    /// The request-target as the client sent it (origin-form: path and query); `None` like
    /// [`RequestEnd::method`].
    pub fn target(&self) -> Option<Cow<'_, str>> {
        match self.target {
            Target::None => None,
            Target::Raw(raw) => Some(Cow::Borrowed(raw)),
            Target::Uri(uri) if uri.scheme().is_none() => {
                Some(Cow::Borrowed(uri.path_and_query().map_or("/", |p| p.as_str())))
            }
            Target::Uri(uri) => Some(Cow::Owned(uri.to_string())),
        }
    }

    /// The HTTP version; `None` like [`RequestEnd::method`].
    pub fn version(&self) -> Option<Version> {
        self.version
    }

    /// The response's status; `None` if the connection closed before any response started
    /// (an access log usually writes nginx's `499` then).
    pub fn status(&self) -> Option<StatusCode> {
        self.status
    }

    /// Bytes of the request's body read from the client (without chunked framing) by the time
    /// the request ended.
    pub fn request_body_bytes(&self) -> u64 {
        self.request_body_bytes
    }

    /// Bytes of the response's body: all of it, or for a cut response, what was written to
    /// the connection. Heads are not counted (nginx's `$body_bytes_sent`).
    pub fn response_body_bytes(&self) -> u64 {
        self.response_body_bytes
    }

    /// From the request's start (the app called, or the head's first byte for a request the
    /// gate refused) to its end: the response's last byte written (see [`Ending::Complete`]),
    /// or the connection closed on it.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// The client's address as identified: forwarding headers from `forwarded_allow_ips`,
    /// a trusted PROXY header, or the peer. `None` on a unix socket with neither. For a
    /// request the gate (or hyper) refused ([`AnsweredBy::Gate`]), the connection's client
    /// only (the PROXY source, or the peer): the fields of a head that was refused are not
    /// read, forwarding headers included; a malformed head is no ground to believe one.
    pub fn client(&self) -> Option<IpAddr> {
        self.client
    }

    /// The address of the connection's other end, or the source a trusted PROXY protocol
    /// header gave.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// The request's `Referer`, if it had one.
    pub fn referer(&self) -> Option<&HeaderValue> {
        self.referer
    }

    /// The request's `User-Agent`, if it had one.
    pub fn user_agent(&self) -> Option<&HeaderValue> {
        self.user_agent
    }

    /// The request header the sink's [`Side::Request`] list has at `index`, if the request had
    /// it and it was read.
    pub(crate) fn request_header(&self, index: usize) -> Option<&HeaderValue> {
        self.request_headers.get(index).and_then(Option::as_ref)
    }

    /// The same for the response's headers.
    pub(crate) fn response_header(&self, index: usize) -> Option<&HeaderValue> {
        self.response_headers.get(index).and_then(Option::as_ref)
    }

    /// The id of the worker that served it (see [`crate::WorkerContext::id`]).
    pub fn worker(&self) -> u64 {
        self.worker
    }

    /// Who answered.
    pub fn answered_by(&self) -> AnsweredBy {
        self.answered_by
    }

    /// Whether the response went out whole: its last byte written to the connection.
    pub fn ending(&self) -> Ending {
        self.ending
    }
}

/// A hook registered for the event.
type Hook = Box<dyn Fn(&RequestEnd<'_>)>;

/// The hooks an app factory registers, shared by the clones of its `WorkerContext`.
#[derive(Clone, Default)]
pub(crate) struct Hooks(Rc<HooksInner>);

#[derive(Default)]
struct HooksInner {
    hooks: RefCell<Vec<Hook>>,
    /// The headers the hooks want copied into the event, requests' and responses'.
    headers: RefCell<Headers>,
    /// The worker has taken the hooks (see [`Hooks::take`]): later ones would never be called.
    taken: std::cell::Cell<bool>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hooks({})", self.0.hooks.borrow().len())
    }
}

/// Which side of an exchange a header is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Request,
    Response,
}

/// The header names a sink copies, per side. Copying costs a clone of each value (a reference
/// count) per request, and one small allocation per side that has names; none without.
#[derive(Debug, Default, Clone)]
pub(crate) struct Headers {
    pub(crate) request: Vec<HeaderName>,
    pub(crate) response: Vec<HeaderName>,
}

impl Headers {
    fn side(&mut self, side: Side) -> &mut Vec<HeaderName> {
        match side {
            Side::Request => &mut self.request,
            Side::Response => &mut self.response,
        }
    }
}

impl Hooks {
    /// Asks for `name` on `side` to be copied into every event: its index in
    /// [`RequestEnd::request_header`] or [`RequestEnd::response_header`]. Only before the
    /// worker takes the hooks.
    pub(crate) fn want_header(&self, side: Side, name: &HeaderName) -> usize {
        let mut headers = self.0.headers.borrow_mut();
        let names = headers.side(side);
        names.iter().position(|n| n == name).unwrap_or_else(|| {
            names.push(name.clone());
            names.len() - 1
        })
    }

    /// Registers a hook; after the worker has taken them (a clone of its `WorkerContext` kept
    /// past the factory), it is dropped, with a warning: the request path reads the hooks
    /// once, so that it pays nothing for them when there are none.
    pub(crate) fn add(&self, hook: Hook) {
        if self.0.taken.get() {
            tracing::warn!(
                "a request-end hook registered after the app factory returned is ignored:                  register hooks from the factory"
            );
            return;
        }
        self.0.hooks.borrow_mut().push(hook);
    }

    /// What the worker calls once its app is built: `None` if no hook was registered, so that
    /// the request path can tell with one test that nothing is to be built.
    pub(crate) fn take(&self, worker: u64) -> Option<Rc<Sink>> {
        self.0.taken.set(true);
        let hooks = std::mem::take(&mut *self.0.hooks.borrow_mut());
        let headers = std::mem::take(&mut *self.0.headers.borrow_mut());
        (!hooks.is_empty()).then(|| Rc::new(Sink { hooks, worker, headers }))
    }
}

/// Where a worker's request-end events go.
pub(crate) struct Sink {
    hooks: Vec<Hook>,
    worker: u64,
    headers: Headers,
}

impl Sink {
    /// The worker's id, for the event.
    pub(crate) fn worker(&self) -> u64 {
        self.worker
    }

    /// Copies the headers the hooks asked for on `side` from `map`, into `into`.
    pub(crate) fn copy_headers(
        &self,
        side: Side,
        map: &http::HeaderMap,
        into: &mut Vec<Option<HeaderValue>>,
    ) {
        let names = match side {
            Side::Request => &self.headers.request,
            Side::Response => &self.headers.response,
        };
        into.clear();
        into.extend(names.iter().map(|n| map.get(n).cloned()));
    }

    /// Hands the event to every hook. A hook that panics is logged and the worker goes on.
    pub(crate) fn emit(&self, event: &RequestEnd<'_>) {
        for hook in &self.hooks {
            let called =
                crate::panics::in_handler(|| catch_unwind(AssertUnwindSafe(|| hook(event))));
            if called.is_err() {
                let message = crate::panics::take_message();
                tracing::error!("a request-end hook panicked: {message}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(target: Target<'_>) -> RequestEnd<'_> {
        RequestEnd {
            method: Some("GET"),
            target,
            version: Some(Version::HTTP_11),
            status: Some(StatusCode::OK),
            request_body_bytes: 0,
            response_body_bytes: 3,
            duration: Duration::ZERO,
            client: None,
            peer: None,
            referer: None,
            user_agent: None,
            request_headers: &[],
            response_headers: &[],
            worker: 1,
            answered_by: AnsweredBy::App,
            ending: Ending::Complete,
        }
    }

    #[test]
    fn the_target_reads_as_the_client_wrote_it() {
        let origin: Uri = "/a/b?c=d".parse().unwrap();
        let absolute: Uri = "http://h:8/a?b".parse().unwrap();
        let star: Uri = "*".parse().unwrap();
        let table = [
            (Target::Uri(&origin), Some("/a/b?c=d")),
            (Target::Uri(&absolute), Some("http://h:8/a?b")),
            (Target::Uri(&star), Some("*")),
            (Target::Raw("/x y"), Some("/x y")),
            (Target::None, None),
        ];
        for (target, want) in table {
            assert_eq!(event(target).target().as_deref(), want);
        }
    }

    #[test]
    fn a_hook_that_panics_does_not_stop_the_others() {
        let seen = Rc::new(std::cell::Cell::new(0));
        let hooks = Hooks::default();
        hooks.add(Box::new(|_| panic!("a bad hook")));
        let counter = Rc::clone(&seen);
        hooks.add(Box::new(move |e| counter.set(counter.get() + e.response_body_bytes())));
        let sink = hooks.take(7).expect("hooks were registered");
        assert!(hooks.take(7).is_none(), "taken once");
        let late = Rc::clone(&seen);
        hooks.add(Box::new(move |_| late.set(1000)));
        assert!(hooks.take(7).is_none(), "a hook added once taken is dropped, not kept");
        sink.emit(&event(Target::None));
        sink.emit(&event(Target::None));
        assert_eq!(seen.get(), 6);
        assert_eq!(sink.worker(), 7);
    }
}
