//! The `respond` app kind: a fixed response (status, body, headers), whatever the request.

use http::{Request, Response, header};
use hyper::body::Incoming;

use super::Body;
use super::kind::{AppKind, Matched, Methods, Reply};
use crate::config::Respond;

impl AppKind for Respond {
    fn methods(&self) -> Methods {
        // It answers any method; `Allow` names the standard ones it would.
        Methods::ANY
    }

    fn call(&self, _req: Request<Incoming>, _at: Matched) -> Reply {
        respond(self).into()
    }
}

/// The response `r` declares.
fn respond(r: &Respond) -> Response<Body> {
    let mut response = Response::new(Body::from(r.body.clone()));
    *response.status_mut() = r.status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, r.content_type.clone());
    for (name, value) in &r.headers {
        headers.append(name.clone(), value.clone());
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_declared_status_body_and_headers_are_sent() {
        let config = crate::config::Config::from_toml(
            "[[route]]\npath = \"/\"\nrespond = { status = 201, body = \"made\", content_type = \"text/x\", headers = { x-a = \"1\" } }\n",
            std::path::Path::new("/"),
        )
        .unwrap();
        let crate::config::Action::Respond(r) = &config.routes[0].action else { panic!() };
        let response = respond(r);
        assert_eq!(response.status(), 201);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "text/x");
        assert_eq!(response.headers()["x-a"], "1");
        assert_eq!(response.into_body().into_bytes().unwrap(), "made");
    }
}
