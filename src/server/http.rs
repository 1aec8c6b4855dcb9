//! HTTP forward auth (`server.http_listen`): every request to this listener, HTTP/1.1 or h2c, is a check
//! of the request a proxy describes in it. Which proxy's description is read is configured
//! (`server.http_mode`), never guessed from the request:
//!
//! - `envoy` (ext_authz `http_service`): the request itself: method, path after `http_path_prefix`
//!   (Envoy's `path_prefix`), headers, host from `Host` / `:authority`. `X-Forwarded-*` and
//!   `X-Original-*` are ordinary headers here.
//! - `forwarded` (Traefik `ForwardAuth`, Caddy `forward_auth`): `X-Forwarded-Method`, `-Proto`, `-Host`
//!   and `-Uri` (each exactly once) describe the request; `X-Forwarded-For` stays a header.
//! - `nginx` (`auth_request`): `X-Original-Method` and `X-Original-URI` (each exactly once), host from
//!   `X-Forwarded-Host`, else `Host`, scheme from `X-Forwarded-Proto`, as `deploy/nginx` sets them.
//!
//! A description that is missing or ambiguous is a 400 denial (fail closed). The decision is the gRPC
//! one ([`super::check::check`]); this file only reads the request and writes the [`Answer`]: an allow is
//! a 200 whose headers are the identity headers (the proxy copies them upstream; removing the client's
//! copies is the proxy's job, see `deploy/`), a denial its status with `WWW-Authenticate` and the JSON
//! body, "cannot decide" a 503.
//!
//! The server is `axum::serve` over any `axum::serve::Listener`, so TLS can later wrap the accepted
//! stream in a listener of its own without touching the handler.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;

use super::App;
use crate::answer::{Answer, Outcome};
use crate::config::{HttpMode, ServerConfig};
use crate::metrics::{Rejection, Transport};
use crate::request::{Headers, RequestView};

/// The listen-time settings of the HTTP listener.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    mode: HttpMode,
    /// `envoy` mode: Envoy's `path_prefix`, removed from the path (empty: none).
    path_prefix: Box<str>,
}

// === impl HttpSettings ===

impl HttpSettings {
    /// The settings of `server.http_*`; `None` without `http_mode` (validation requires it with a listener).
    pub fn from_config(server: &ServerConfig) -> Option<HttpSettings> {
        Some(HttpSettings {
            mode: server.http_mode?,
            path_prefix: server.http_path_prefix.as_str().into(),
        })
    }
}

pub fn router(app: Arc<App>, settings: HttpSettings) -> Router {
    Router::new()
        .fallback(forward_auth)
        .with_state((app, Arc::new(settings)))
}

/// The original request as the proxy describes it.
#[derive(Debug, PartialEq, Eq)]
struct Original<'a> {
    method: &'a str,
    /// Path with its query string.
    path_and_query: &'a str,
    host: &'a str,
    scheme: &'a str,
}

/// Why a request does not describe one original request: its status is 400.
#[derive(Debug, PartialEq, Eq)]
struct Undescribed(&'static str);

async fn forward_auth(
    State((app, settings)): State<(Arc<App>, Arc<HttpSettings>)>,
    request: Request,
) -> Response {
    let started = std::time::Instant::now();
    let metrics = app.metrics();
    // Past the limit, an immediate 503 (which every proxy treats as a failure, never an allow).
    let Some(_permit) = app.admit() else {
        metrics.reject(Transport::Http, Rejection::Overloaded);
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many checks in flight (server.max_concurrent_checks)",
        )
            .into_response();
    };
    let _in_flight = metrics.in_flight();
    let (parts, _body) = request.into_parts();
    // Lower-case names (the `http` crate's), one entry per header line, as Envoy's raw header list.
    let pairs: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let headers = Headers::List(&pairs);
    let own_path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let own_host = headers
        .get("host")
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
        .unwrap_or("");
    let original = match describe(
        &settings,
        parts.method.as_str(),
        own_path,
        own_host,
        headers,
    ) {
        Ok(original) => original,
        Err(Undescribed(why)) => {
            tracing::warn!(
                authz.transport = Transport::Http.as_str(),
                http.mode = settings.mode.as_str(),
                "not a forward-auth request: {why}; denied (400)"
            );
            return undescribed(why);
        }
    };
    let mut view = RequestView::new(
        original.method,
        original.path_and_query,
        original.host,
        headers,
        headers.get("x-request-id").unwrap_or(""),
    );
    view.scheme = original.scheme;
    // The client's address as the (trusted) proxy appended it: the last X-Forwarded-For entry.
    let source = headers
        .get("x-forwarded-for")
        .and_then(|v| v.rsplit(',').next())
        .map_or("", str::trim);
    super::check::check(
        &app,
        app.runtime(),
        super::check::Arrival {
            transport: Transport::Http,
            source: (source, 0),
            started,
        },
        &view,
        |key| headers.get(key),
        http_response,
    )
    .await
}

/// Reads the original request the way `settings.mode` says.
fn describe<'a>(
    settings: &HttpSettings,
    method: &'a str,
    path_and_query: &'a str,
    host: &'a str,
    headers: Headers<'a>,
) -> Result<Original<'a>, Undescribed> {
    // Exactly one line: two would let whoever added the second choose the request that is checked.
    let one = |name: &'static str, missing: &'static str, repeated: &'static str| match headers
        .count(name)
    {
        0 => Err(Undescribed(missing)),
        1 => headers
            .get(name)
            .filter(|v| !v.is_empty())
            .ok_or(Undescribed(missing)),
        _ => Err(Undescribed(repeated)),
    };
    let at_most_one = |name: &'static str, repeated: &'static str| match headers.count(name) {
        0 | 1 => Ok(headers.get(name)),
        _ => Err(Undescribed(repeated)),
    };
    let original = match settings.mode {
        HttpMode::Envoy => {
            let path_and_query = match settings.path_prefix.as_ref() {
                "" => path_and_query,
                prefix => path_and_query
                    .strip_prefix(prefix)
                    .filter(|rest| rest.starts_with('/'))
                    .ok_or(Undescribed(
                        "the path does not start with server.http_path_prefix",
                    ))?,
            };
            Original {
                method,
                path_and_query,
                host,
                scheme: "",
            }
        }
        HttpMode::Forwarded => Original {
            method: one(
                "x-forwarded-method",
                "X-Forwarded-Method is missing",
                "X-Forwarded-Method is repeated",
            )?,
            path_and_query: one(
                "x-forwarded-uri",
                "X-Forwarded-Uri is missing",
                "X-Forwarded-Uri is repeated",
            )?,
            host: one(
                "x-forwarded-host",
                "X-Forwarded-Host is missing",
                "X-Forwarded-Host is repeated",
            )?,
            scheme: one(
                "x-forwarded-proto",
                "X-Forwarded-Proto is missing",
                "X-Forwarded-Proto is repeated",
            )?,
        },
        HttpMode::Nginx => Original {
            method: one(
                "x-original-method",
                "X-Original-Method is missing",
                "X-Original-Method is repeated",
            )?,
            path_and_query: one(
                "x-original-uri",
                "X-Original-URI is missing",
                "X-Original-URI is repeated",
            )?,
            host: at_most_one("x-forwarded-host", "X-Forwarded-Host is repeated")?.unwrap_or(host),
            scheme: at_most_one("x-forwarded-proto", "X-Forwarded-Proto is repeated")?
                .unwrap_or(""),
        },
    };
    if !original.path_and_query.starts_with('/') {
        return Err(Undescribed("the original path does not start with `/`"));
    }
    // nginx's `$request_uri` keeps a fragment a client sent; upstreams drop it (RFC 3986 §3.5), so the
    // path they serve is not the path a route would match.
    if original.path_and_query.contains('#') {
        return Err(Undescribed(
            "the original URI carries a fragment (`#`), which is never part of a request path",
        ));
    }
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    if !token(original.method) {
        return Err(Undescribed("the original method is not an HTTP method"));
    }
    if !matches!(original.scheme, "" | "http" | "https") {
        return Err(Undescribed("the original scheme is neither http nor https"));
    }
    Ok(original)
}

/// The 400 answer to a request that does not describe one: a denial at every proxy (nginx makes it a 500).
fn undescribed(why: &'static str) -> Response {
    let body = serde_json::json!({
        "error": "invalid_request",
        "error_description": format!("the forward-auth request is incomplete: {why}"),
    });
    (
        StatusCode::BAD_REQUEST,
        [("cache-control", "no-store")],
        axum::Json(body),
    )
        .into_response()
}

/// Writes an answer as the proxy reads it: 200 allows, anything else denies.
fn http_response(answer: Answer<'_>) -> Response {
    let status = match answer.outcome {
        Outcome::Allow => StatusCode::OK,
        Outcome::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        // Never a 2xx or 3xx for a denial: a proxy would let the request through.
        Outcome::Deny { .. } => StatusCode::from_u16(answer.status)
            .ok()
            .filter(|s| s.is_client_error() || s.is_server_error())
            .unwrap_or(StatusCode::FORBIDDEN),
    };
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    for (name, value) in &answer.headers {
        let parsed = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value.as_bytes()),
        );
        match parsed {
            (Ok(name), Ok(value)) => {
                headers.insert(name, value);
            }
            // An identity we cannot write is not an allow.
            _ if status == StatusCode::OK => {
                tracing::warn!(
                    authz.transport = Transport::Http.as_str(),
                    header = %name,
                    "an identity header's value cannot be written over HTTP; answering 500"
                );
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            }
            _ => {}
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(mode: HttpMode, prefix: &str) -> HttpSettings {
        HttpSettings {
            mode,
            path_prefix: prefix.into(),
        }
    }

    fn describe_with<'a>(
        settings: &HttpSettings,
        pairs: &'a [(&'a str, &'a str)],
    ) -> Result<Original<'a>, Undescribed> {
        describe(
            settings,
            "GET",
            "/auth/own?x=1",
            "authz.internal",
            Headers::Pairs(pairs),
        )
    }

    #[test]
    fn envoy_mode_reads_the_request_itself_after_the_prefix() {
        let spoofed = [
            ("x-forwarded-uri", "/public"),
            ("x-original-uri", "/public"),
            ("x-forwarded-host", "evil.example"),
        ];
        let original = describe_with(&settings(HttpMode::Envoy, "/auth"), &spoofed).unwrap();
        assert_eq!(
            original,
            Original {
                method: "GET",
                path_and_query: "/own?x=1",
                host: "authz.internal",
                scheme: ""
            }
        );
        assert_eq!(
            describe_with(&settings(HttpMode::Envoy, "/other"), &[]),
            Err(Undescribed(
                "the path does not start with server.http_path_prefix"
            ))
        );
        // `/authx/…` does not start with the prefix `/auth` as a path segment.
        assert!(describe(
            &settings(HttpMode::Envoy, "/auth"),
            "GET",
            "/authx/own",
            "h",
            Headers::Pairs(&[])
        )
        .is_err());
    }

    #[test]
    fn forwarded_mode_needs_each_field_once() {
        let full = [
            ("x-forwarded-method", "POST"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "api.example.com"),
            ("x-forwarded-uri", "/admin?q=1"),
            ("x-forwarded-for", "192.0.2.1"),
        ];
        let forwarded = settings(HttpMode::Forwarded, "");
        let original = describe_with(&forwarded, &full).unwrap();
        assert_eq!(
            original,
            Original {
                method: "POST",
                path_and_query: "/admin?q=1",
                host: "api.example.com",
                scheme: "https"
            }
        );
        for missing in 0..4 {
            let mut partial = full.to_vec();
            partial.remove(missing);
            assert!(
                describe_with(&forwarded, &partial).is_err(),
                "{:?}",
                full[missing]
            );
        }
        let mut repeated = full.to_vec();
        repeated.push(("X-Forwarded-Uri", "/public"));
        assert_eq!(
            describe_with(&forwarded, &repeated),
            Err(Undescribed("X-Forwarded-Uri is repeated"))
        );
        let mut relative = full.to_vec();
        relative[3] = ("x-forwarded-uri", "admin");
        assert!(describe_with(&forwarded, &relative).is_err());
    }

    #[test]
    fn nginx_mode_needs_the_original_uri_and_method() {
        let nginx = settings(HttpMode::Nginx, "");
        assert_eq!(
            describe_with(&nginx, &[("x-original-method", "GET")]),
            Err(Undescribed("X-Original-URI is missing"))
        );
        assert_eq!(
            describe_with(&nginx, &[("x-original-uri", "/a")]),
            Err(Undescribed("X-Original-Method is missing"))
        );
        let original = describe_with(
            &nginx,
            &[
                ("x-original-method", "DELETE"),
                ("x-original-uri", "/a/b"),
                ("x-forwarded-host", "api.example.com"),
                ("x-forwarded-proto", "https"),
                // Not nginx's: an ordinary header in this mode.
                ("x-forwarded-uri", "/public"),
            ],
        )
        .unwrap();
        assert_eq!(
            original,
            Original {
                method: "DELETE",
                path_and_query: "/a/b",
                host: "api.example.com",
                scheme: "https"
            }
        );
        let own_host = describe_with(
            &nginx,
            &[("x-original-method", "GET"), ("x-original-uri", "/")],
        )
        .unwrap();
        assert_eq!(own_host.host, "authz.internal");
        for uri in ["/v1/kill-switch#x", "/v1/kill-switch?a=1#x", "/#"] {
            assert_eq!(
                describe_with(
                    &nginx,
                    &[("x-original-method", "GET"), ("x-original-uri", uri)]
                ),
                Err(Undescribed(
                    "the original URI carries a fragment (`#`), which is never part of a request path"
                )),
                "{uri}"
            );
        }
    }

    #[test]
    fn a_denial_is_never_written_as_a_success() {
        let answer = Answer {
            outcome: Outcome::Deny {
                standard_status: 403,
            },
            status: 200,
            headers: Vec::new(),
            identity_headers: None,
            remove: Vec::new(),
            remove_query: Vec::new(),
            body: String::new(),
            reason: "missing_scope",
            metadata: None,
            explanation: None,
        };
        assert_eq!(http_response(answer).status(), StatusCode::FORBIDDEN);
    }
}
