//! The HTTP forward-auth listener (`server.http_listen`) of a real server on 127.0.0.1:0, in each
//! `server.http_mode`, against a fake IdP on loopback: the answers are the gRPC ones (same headers,
//! challenge, body), the original request is read only from the configured source, and an incomplete
//! description is denied.

use portcullis_test as common;

use common::*;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::{json, Value};

const AUD: &str = "https://api.example.com/";

fn config(idp: &FakeIdp, server: &str) -> String {
    format!(
        "
server:
  drain_seconds: 0
  http_listen: 127.0.0.1:0
{server}
providers:
  - name: test-idp
    type: jwt
    issuer: {iss}
    audiences: [{AUD}]
routes:
  - name: admin
    match: {{path_prefix: /admin}}
    require: {{scopes: {{all_of: [admin:data]}}}}
  - name: writes
    match: {{path_prefix: /items, methods: [POST]}}
    require: {{scopes: {{all_of: [write:data]}}}}
",
        iss = idp.issuer
    )
}

struct Setup {
    idp: FakeIdp,
    server: TestServer,
    key: TestKey,
}

async fn setup(server: &str) -> Setup {
    let idp = FakeIdp::start().await;
    let key = TestKey::rsa("rsa-1");
    idp.set_keys(&[&key]);
    let server = TestServer::start(&config(&idp, server)).await.ready().await;
    Setup { idp, server, key }
}

impl Setup {
    fn token(&self, scope: &str) -> String {
        let mut claims = claims(&self.idp.issuer, AUD);
        claims["scope"] = json!(scope);
        self.key.token(&claims)
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.server.http.expect("http listener"))
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// One forward-auth request: `GET url` with these header lines (repeats kept).
async fn ask(url: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = client().get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

fn get<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The body without its decision id (unique per check), for comparing answers.
fn without_id(body: &str) -> Value {
    let mut value: Value = serde_json::from_str(body).unwrap();
    value.as_object_mut().unwrap().remove("decision_id");
    value
}

#[tokio::test]
async fn envoy_mode_answers_like_grpc_allow_401_403() {
    let s = setup("  http_mode: envoy\n  http_path_prefix: /ext-authz").await;
    let token = s.token("read:data");
    let bearer = format!("Bearer {token}");

    // Allow: 200 carrying the identity headers, the same names and values as over gRPC.
    let answer = ask(
        &s.url("/ext-authz/items?page=2"),
        &[("authorization", &bearer), ("x-auth-subject", "forged")],
    )
    .await;
    assert_eq!(answer.status(), StatusCode::OK);
    let grpc = s
        .server
        .send(request_to(
            "GET",
            "/items?page=2",
            &[("authorization", &bearer)],
        ))
        .await;
    let allowed = ok(&grpc);
    for name in [
        "x-auth-subject",
        "x-auth-issuer",
        "x-auth-scopes",
        "x-auth-provider",
    ] {
        assert_eq!(
            get(answer.headers(), name),
            header(&allowed.headers, name),
            "{name}"
        );
    }
    assert_eq!(get(answer.headers(), "x-auth-subject"), Some("user-1"));
    assert!(get(answer.headers(), "x-auth-decision-id").is_some_and(|id| !id.is_empty()));

    // No credential: 401 with the gRPC challenge and body.
    let answer = ask(&s.url("/ext-authz/items"), &[]).await;
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    let grpc = s.server.send(request_to("GET", "/items", &[])).await;
    let grpc = denied(&grpc);
    assert_eq!(
        get(answer.headers(), "www-authenticate"),
        header(&grpc.headers, "www-authenticate")
    );
    assert!(get(answer.headers(), "www-authenticate")
        .unwrap()
        .starts_with("Bearer realm=\"portcullis\""));
    assert_eq!(
        get(answer.headers(), "content-type"),
        Some("application/json")
    );
    let body = answer.text().await.unwrap();
    assert_eq!(without_id(&body), without_id(&grpc.body));

    // Insufficient scope: 403 with the insufficient_scope challenge.
    let answer = ask(
        &s.url("/ext-authz/admin/users"),
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(answer.status(), StatusCode::FORBIDDEN);
    let challenge = get(answer.headers(), "www-authenticate").unwrap();
    assert!(
        challenge.contains("error=\"insufficient_scope\""),
        "{challenge}"
    );
    assert_eq!(
        without_id(&answer.text().await.unwrap())["error"],
        "insufficient_scope"
    );

    // The checks are counted under transport="http", the gRPC ones under "grpc".
    let metrics = s.server.metrics().await;
    for line in [
        "decision=\"allow\",reason=\"\",route=\"default\",provider=\"test-idp\",transport=\"http\"} 1",
        "decision=\"allow\",reason=\"\",route=\"default\",provider=\"test-idp\",transport=\"grpc\"} 1",
        "decision=\"deny\",reason=\"missing_scope\",route=\"admin\",provider=\"test-idp\",transport=\"http\"} 1",
        "decision=\"deny\",reason=\"missing_credential\",route=\"default\",provider=\"\",transport=\"http\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
}

#[tokio::test]
async fn envoy_mode_trusts_no_forwarded_header() {
    let s = setup("  http_mode: envoy\n  http_path_prefix: /ext-authz").await;
    let bearer = format!("Bearer {}", s.token("read:data"));
    // The request is for /admin; headers claiming /items (other proxies' conventions) change nothing.
    let answer = ask(
        &s.url("/ext-authz/admin"),
        &[
            ("authorization", &bearer),
            ("x-forwarded-uri", "/items"),
            ("x-forwarded-method", "GET"),
            ("x-original-uri", "/items"),
            ("x-original-method", "GET"),
        ],
    )
    .await;
    assert_eq!(answer.status(), StatusCode::FORBIDDEN);
    // A path outside Envoy's path_prefix is not Envoy's description of a request.
    let answer = ask(&s.url("/items"), &[("authorization", &bearer)]).await;
    assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
    let answer = ask(&s.url("/ext-authzadmin"), &[("authorization", &bearer)]).await;
    assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
}

/// A request as Traefik's ForwardAuth middleware sends it: `GET` to the auth address, the client's
/// headers copied, and X-Forwarded-Method/-Proto/-Host/-Uri/-For describing the original request.
fn traefik<'a>(
    method: &'a str,
    uri: &'a str,
    client_headers: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut headers = vec![
        ("user-agent", "curl/8.5.0"),
        ("accept", "*/*"),
        ("x-forwarded-for", "192.0.2.10"),
        ("x-forwarded-host", "api.example.com"),
        ("x-forwarded-method", method),
        ("x-forwarded-port", "443"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-server", "traefik-7d9f"),
        ("x-forwarded-uri", uri),
        ("x-real-ip", "192.0.2.10"),
    ];
    headers.extend_from_slice(client_headers);
    headers
}

#[tokio::test]
async fn forwarded_mode_reads_traefiks_request_shape() {
    let s = setup("  http_mode: forwarded").await;
    let reader = format!("Bearer {}", s.token("read:data"));
    let writer = format!("Bearer {}", s.token("read:data write:data"));
    let auth = s.url("/");

    // The method and path come from X-Forwarded-*: a POST to /items needs write:data.
    let answer = ask(
        &auth,
        &traefik("GET", "/items?page=1", &[("authorization", &reader)]),
    )
    .await;
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(get(answer.headers(), "x-auth-subject"), Some("user-1"));
    let answer = ask(
        &auth,
        &traefik("POST", "/items", &[("authorization", &reader)]),
    )
    .await;
    assert_eq!(answer.status(), StatusCode::FORBIDDEN);
    let answer = ask(
        &auth,
        &traefik("POST", "/items", &[("authorization", &writer)]),
    )
    .await;
    assert_eq!(answer.status(), StatusCode::OK);
    let answer = ask(
        &auth,
        &traefik("GET", "/admin", &[("authorization", &writer)]),
    )
    .await;
    assert_eq!(answer.status(), StatusCode::FORBIDDEN);
    let answer = ask(&auth, &traefik("GET", "/items", &[])).await;
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    assert!(get(answer.headers(), "www-authenticate").is_some());

    // The auth request's own path is not the original one: /admin here changes nothing.
    let answer = ask(
        &s.url("/admin"),
        &traefik("GET", "/items", &[("authorization", &reader)]),
    )
    .await;
    assert_eq!(answer.status(), StatusCode::OK);

    // Missing or repeated fields fail closed (400), even with a valid token.
    let complete = traefik("GET", "/items", &[("authorization", &reader)]);
    for dropped in [
        "x-forwarded-method",
        "x-forwarded-uri",
        "x-forwarded-host",
        "x-forwarded-proto",
    ] {
        let partial: Vec<_> = complete
            .iter()
            .copied()
            .filter(|(k, _)| *k != dropped)
            .collect();
        let answer = ask(&auth, &partial).await;
        assert_eq!(
            answer.status(),
            StatusCode::BAD_REQUEST,
            "without {dropped}"
        );
        assert!(get(answer.headers(), "x-auth-subject").is_none());
    }
    let mut repeated = complete.clone();
    repeated.push(("x-forwarded-uri", "/admin"));
    let answer = ask(&auth, &repeated).await;
    assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn nginx_mode_reads_the_original_uri_and_fails_closed_without_it() {
    let s = setup("  http_mode: nginx").await;
    let bearer = format!("Bearer {}", s.token("read:data"));
    let auth = s.url("/_portcullis");
    let answer = ask(
        &auth,
        &[
            ("authorization", &bearer),
            ("x-original-uri", "/items"),
            ("x-original-method", "GET"),
            ("x-forwarded-host", "api.example.com"),
        ],
    )
    .await;
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(get(answer.headers(), "x-auth-subject"), Some("user-1"));
    let answer = ask(
        &auth,
        &[
            ("authorization", &bearer),
            ("x-original-uri", "/admin"),
            ("x-original-method", "GET"),
            // Traefik's convention is not nginx's: ignored.
            ("x-forwarded-uri", "/items"),
        ],
    )
    .await;
    assert_eq!(answer.status(), StatusCode::FORBIDDEN);
    // Without X-Original-URI nothing says what to check: 400, never an allow.
    let answer = ask(
        &auth,
        &[("authorization", &bearer), ("x-original-method", "GET")],
    )
    .await;
    assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");
    let answer = ask(
        &auth,
        &[("authorization", &bearer), ("x-original-uri", "/items")],
    )
    .await;
    assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn an_unreachable_idp_is_a_503() {
    let idp = FakeIdp::start().await;
    let key = TestKey::rsa("rsa-1");
    idp.set_keys(&[&key]);
    idp.set_mode(IdpMode::Fail500);
    let server = TestServer::start(&config(&idp, "  http_mode: envoy")).await;
    let token = key.token(&claims(&idp.issuer, AUD));
    let answer = ask(
        &format!("http://{}/items", server.http.unwrap()),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(get(answer.headers(), "x-auth-subject").is_none());
    let body = answer.text().await.unwrap();
    assert!(body.contains("temporarily_unavailable"), "{body}");
    assert!(!body.contains("127.0.0.1"), "no internal detail: {body}");
}

#[tokio::test]
async fn h2c_prior_knowledge_is_served() {
    let s = setup("  http_mode: envoy").await;
    let bearer = format!("Bearer {}", s.token("read:data"));
    let h2c = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let answer = h2c
        .get(s.url("/items"))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.version(), reqwest::Version::HTTP_2);
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(get(answer.headers(), "x-auth-subject"), Some("user-1"));
    let answer = h2c
        .get(s.url("/admin"))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_server_without_http_listen_has_no_http_listener() {
    let idp = FakeIdp::start().await;
    let yaml = config(&idp, "").replace("  http_listen: 127.0.0.1:0\n", "");
    let server = TestServer::start(&yaml).await;
    assert!(server.http.is_none());
}

#[tokio::test]
async fn shutdown_closes_the_http_listener_with_idle_keep_alive_connections_open() {
    let mut s = setup("  http_mode: envoy").await;
    let bearer = format!("Bearer {}", s.token("read:data"));
    // Both clients keep their connection open after the answer, as nginx's `keepalive` and Envoy do.
    let http1 = client();
    let h2c = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    for c in [&http1, &h2c] {
        let answer = c
            .get(s.url("/items"))
            .header("authorization", &bearer)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
    }
    let url = s.url("/items");
    let task = s.server.begin_shutdown();
    let result = tokio::time::timeout(std::time::Duration::from_secs(10), task)
        .await
        .expect("the server stopped within 10 s")
        .unwrap();
    assert!(result.is_ok(), "{result:?}");
    assert!(
        client().get(url).send().await.is_err(),
        "no longer listening"
    );
}

/// Issue 28 finding 1: a fragment (`#x`, as nginx's `$request_uri` passes it, or `%23x`) must not take a
/// request to an exact-path route past that route: upstreams drop the fragment and serve the route's path.
#[tokio::test]
async fn a_fragment_never_escapes_an_exact_path_route() {
    let idp = FakeIdp::start().await;
    let key = TestKey::rsa("rsa-1");
    idp.set_keys(&[&key]);
    let yaml = format!(
        "
server:
  drain_seconds: 0
  http_listen: 127.0.0.1:0
  http_mode: nginx
providers:
  - name: test-idp
    type: jwt
    issuer: {iss}
    audiences: [{AUD}]
default_route:
  allow_anonymous: true
routes:
  - name: kill-switch
    match: {{path: /v1/kill-switch}}
    require: {{scopes: {{all_of: [admin:data]}}}}
",
        iss = idp.issuer
    );
    let server = TestServer::start(&yaml).await.ready().await;
    let auth = format!("http://{}/_portcullis", server.http.expect("http listener"));
    let mut claims = claims(&idp.issuer, AUD);
    claims["scope"] = json!("read:data");
    let bearer = format!("Bearer {}", key.token(&claims));
    // The route itself: no token is a 401, a token without the scope a 403.
    let plain = ask(
        &auth,
        &[
            ("x-original-uri", "/v1/kill-switch"),
            ("x-original-method", "POST"),
        ],
    )
    .await;
    assert_eq!(plain.status(), StatusCode::UNAUTHORIZED);
    for uri in [
        "/v1/kill-switch#x",
        "/v1/kill-switch#",
        "/v1/kill-switch%23x",
        "/v1/kill-switch%23",
        "/V1/kill-switch%23x",
    ] {
        for headers in [
            vec![("x-original-uri", uri), ("x-original-method", "POST")],
            vec![
                ("x-original-uri", uri),
                ("x-original-method", "POST"),
                ("authorization", bearer.as_str()),
            ],
        ] {
            let answer = ask(&auth, &headers).await;
            assert!(
                answer.status().is_client_error(),
                "{uri} with {} header(s): {}",
                headers.len(),
                answer.status()
            );
        }
    }
    // The laxer default route still serves other paths anonymously.
    let other = ask(
        &auth,
        &[
            ("x-original-uri", "/v1/status"),
            ("x-original-method", "GET"),
        ],
    )
    .await;
    assert_eq!(other.status(), StatusCode::OK);
}
