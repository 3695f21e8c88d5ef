//! The HTTP/2 request layer, in front of the service stack: the `[http]` head limits HTTP/1's
//! gate applies byte by byte, applied here to the request h2 decoded (`431`, `414`, `413` for a
//! declared body too large, `400` for a Host that contradicts `:authority`), and the request
//! made to look as HTTP/1's do: `Host` from `:authority` (RFC 9113 §8.3.1), the target in
//! origin form (`/path?query`), so that routes, the access log (`GET /x HTTP/2.0`) and WSGI's
//! environ see one shape whatever the protocol. A refused request never reaches the stack; its
//! end is reported as the gate reports HTTP/1's ([`AnsweredBy::Gate`]).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::uri::PathAndQuery;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header};
use hyper::body::Incoming;

use super::streams::Streams;
use crate::app::HttpService;
use crate::config::HttpConfig;
use crate::conn::service::{AppService, Guarded, ResponseBody, refusal};
use crate::conn::transport::Facts;
use crate::request_end::{AnsweredBy, Ending, RequestEnd, Sink, Target};

/// The `[http]` limits, as HTTP/2 requests meet them (0: no limit, as in the settings).
pub(crate) struct Limits {
    /// `limit_request_line`, against what the request line would be in HTTP/1 (`GET /x
    /// HTTP/2.0`).
    line: u64,
    /// `limit_request_fields`.
    fields: u64,
    /// `limit_request_field_size`, against `name: value`.
    field_size: u64,
    /// `max_body_size`, against `Content-Length`.
    body: u64,
    /// Where refused requests' ends go.
    pub(crate) sink: Option<Rc<Sink>>,
}

impl Limits {
    pub(crate) fn new(config: &HttpConfig, sink: Option<Rc<Sink>>) -> Self {
        Limits {
            line: config.limit_request_line,
            fields: config.limit_request_fields,
            field_size: config.limit_request_field_size,
            body: config.max_body_size,
            sink,
        }
    }

    /// Checks `req` and makes it look as HTTP/1's: its declared body length, or the status
    /// to refuse it with.
    fn admit<B>(&self, req: &mut Request<B>) -> Result<u64, StatusCode> {
        if req.method() == Method::CONNECT {
            // hyper's extended CONNECT stays off: nothing here tunnels.
            return Err(StatusCode::NOT_IMPLEMENTED);
        }
        let target = req.uri().path_and_query().map_or(1, |p| p.as_str().len()) as u64;
        let line = req.method().as_str().len() as u64 + 1 + target + " HTTP/2.0".len() as u64;
        if self.line > 0 && line > self.line {
            return Err(StatusCode::URI_TOO_LONG);
        }
        let headers = req.headers();
        if headers.len() as u64 > self.fields {
            return Err(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        }
        if self.field_size > 0
            && headers
                .iter()
                .any(|(n, v)| (n.as_str().len() + 2 + v.len()) as u64 > self.field_size)
        {
            return Err(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        }
        let declared = match headers.get(header::CONTENT_LENGTH) {
            // h2 has checked it is a number, and that the DATA frames agree with it.
            Some(v) => v.to_str().ok().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0),
            None => 0,
        };
        if self.body > 0 && declared > self.body {
            return Err(StatusCode::PAYLOAD_TOO_LARGE);
        }
        let authority = req.uri().authority().map(|a| a.as_str().to_owned());
        match (req.headers().get(header::HOST), authority) {
            (None, Some(authority)) => {
                let host =
                    HeaderValue::from_str(&authority).map_err(|_| StatusCode::BAD_REQUEST)?;
                req.headers_mut().insert(header::HOST, host);
            }
            (Some(host), Some(authority))
                if !host.as_bytes().eq_ignore_ascii_case(authority.as_bytes()) =>
            {
                return Err(StatusCode::BAD_REQUEST);
            }
            (None, None) => return Err(StatusCode::BAD_REQUEST),
            _ => {}
        }
        if req.uri().scheme().is_some() || req.uri().authority().is_some() {
            *req.uri_mut() = Uri::from(origin_form(req.uri()));
        }
        Ok(declared)
    }

    /// Hands the end of a request refused with `status` to the hooks.
    fn report(&self, req: &Request<Incoming>, status: StatusCode, facts: &Facts, since: Instant) {
        let Some(sink) = self.sink.as_ref() else { return };
        // In origin form, as any other request's (h2's has its scheme and authority).
        let target = Uri::from(origin_form(req.uri()));
        sink.emit(&RequestEnd {
            method: Some(req.method().as_str()),
            target: Target::Uri(&target),
            version: Some(Version::HTTP_2),
            status: Some(status),
            request_body_bytes: 0,
            response_body_bytes: status.canonical_reason().map_or(6, |r| r.len() as u64 + 1),
            duration: since.elapsed(),
            client: facts.client_ip(),
            peer: facts.client(),
            referer: None,
            user_agent: None,
            request_headers: &[],
            response_headers: &[],
            worker: sink.worker(),
            answered_by: AnsweredBy::Gate,
            // Handed to h2 whole: as complete as any h2 response (see `streams`).
            ending: Ending::Complete,
        });
    }
}

/// `uri`'s path and query: the target in origin form.
fn origin_form(uri: &Uri) -> PathAndQuery {
    uri.path_and_query().cloned().unwrap_or(PathAndQuery::from_static("/"))
}

/// The layer on one connection: the stack behind it, and what it checks against.
pub(crate) struct Layer<S: HttpService> {
    pub(crate) stack: AppService<S, Streams>,
    pub(crate) streams: Rc<Streams>,
    pub(crate) limits: Rc<Limits>,
    pub(crate) facts: Rc<Facts>,
}

type Answered<S> = Response<ResponseBody<<S as HttpService>::Body, Streams>>;

impl<S: HttpService> hyper::service::Service<Request<Incoming>> for Layer<S> {
    type Response = Answered<S>;
    type Error = Infallible;
    type Future = Answer<Guarded<S::Future, Streams>, Answered<S>>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        match self.limits.admit(&mut req) {
            Ok(declared) => {
                self.streams.declare_body(declared);
                if !req.headers().contains_key(header::CONTENT_LENGTH)
                    && !hyper::body::Body::is_end_stream(req.body())
                {
                    self.streams.declare_unsized();
                }
                Answer::App { future: hyper::service::Service::call(&self.stack, req) }
            }
            Err(status) => {
                tracing::debug!(status = status.as_u16(), "http/2 request refused");
                self.limits.report(&req, status, &self.facts, Instant::now());
                Answer::Refused { response: Some(refusal(status)) }
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The stack's answer, or the layer's own refusal.
    #[project = AnswerProj]
    pub(crate) enum Answer<F, R> {
        App { #[pin] future: F },
        Refused { response: Option<R> },
    }
}

impl<F, R> Future for Answer<F, R>
where
    F: Future<Output = Result<R, Infallible>>,
{
    type Output = Result<R, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AnswerProj::App { future } => future.poll(cx),
            AnswerProj::Refused { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                // Polled again after it was ready: hyper does not, and nothing is left.
                None => Poll::Pending,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        let config = HttpConfig {
            limit_request_line: 40,
            limit_request_fields: 3,
            limit_request_field_size: 30,
            max_body_size: 100,
            ..HttpConfig::default()
        };
        Limits::new(&config, None)
    }

    fn request(uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().uri(uri).version(Version::HTTP_2);
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn the_head_limits_apply_as_in_http1() {
        let l = limits();
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], Result<u64, StatusCode>);
        let cases: [Case<'_>; 8] = [
            ("http://a.test/x?y", &[], Ok(0)),
            ("http://a.test/x", &[("content-length", "100")], Ok(100)),
            ("http://a.test/x", &[("content-length", "101")], Err(StatusCode::PAYLOAD_TOO_LARGE)),
            // "GET " + 28 + " HTTP/2.0" = 41 > 40
            ("http://a.test/aaaaaaaaaaaaaaaaaaaaaaaaaaa", &[], Err(StatusCode::URI_TOO_LONG)),
            (
                "http://a.test/",
                &[("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")],
                Err(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
            ),
            (
                "http://a.test/",
                &[("x", "0123456789012345678901234567")],
                Err(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
            ),
            ("http://a.test/", &[("host", "b.test")], Err(StatusCode::BAD_REQUEST)),
            ("/", &[], Err(StatusCode::BAD_REQUEST)),
        ];
        for (uri, headers, expected) in cases {
            assert_eq!(l.admit(&mut request(uri, headers)), expected, "{uri} {headers:?}");
        }
    }

    #[test]
    fn host_comes_from_the_authority_and_the_target_is_origin_form() {
        let mut req = request("http://a.test:8080/x?y", &[]);
        assert_eq!(limits().admit(&mut req), Ok(0));
        assert_eq!(req.headers()[header::HOST], "a.test:8080");
        assert_eq!(req.uri().to_string(), "/x?y");
        let mut same = request("http://A.test/", &[("host", "a.TEST")]);
        assert_eq!(limits().admit(&mut same), Ok(0), "hosts compare without case");
        let mut connect = Request::connect("a.test:443").body(()).unwrap();
        assert_eq!(limits().admit(&mut connect), Err(StatusCode::NOT_IMPLEMENTED));
    }
}
