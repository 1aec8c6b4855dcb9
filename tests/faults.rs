//! Faults of the outside world (issue 13), each against real servers on loopback: a key set endpoint that is
//! down, slow, answers garbage, HTML, an empty set, unusable keys or 50 MB; introspection, webhook and
//! GitHub timing out or failing; tokens at the edges of `exp`/`nbf` and the leeway. Known tokens keep
//! working, unknown keys are denied, nothing is ever allowed for a failure, and no check waits on another.

use portcullis_test as common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use common::upstream::{FakeUpstream, Mode};
use common::*;
use portcullis::pb::auth::check_response::HttpResponse;
use portcullis::pb::auth::CheckResponse;
use portcullis::{Clock, Sources};
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// What the fake key set endpoint answers.
#[derive(Clone)]
enum Jwks {
    /// A JSON body with this content type.
    Body(&'static str, String),
    Status(u16),
    /// The keys, after this delay.
    Slow(Duration, String),
    /// A 200 of about this many bytes, streamed: a key set with these keys, padded with whitespace, so
    /// it is valid if read whole.
    Huge(usize, String),
}

struct JwksState {
    answer: Mutex<Jwks>,
    hits: AtomicUsize,
}

/// A key set endpoint on loopback whose answer a test switches.
struct JwksServer {
    url: String,
    state: Arc<JwksState>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    async fn start(keys: &[&TestKey]) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks", listener.local_addr().unwrap());
        let state = Arc::new(JwksState {
            answer: Mutex::new(Jwks::Body("application/json", key_set(keys))),
            hits: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/jwks", get(serve_jwks))
            .with_state(Arc::clone(&state));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        JwksServer { url, state, task }
    }

    fn set(&self, answer: Jwks) {
        *self.state.answer.lock().unwrap() = answer;
    }

    fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn key_set(keys: &[&TestKey]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()}).to_string()
}

async fn serve_jwks(State(state): State<Arc<JwksState>>) -> Response {
    state.hits.fetch_add(1, Ordering::SeqCst);
    let answer = state.answer.lock().unwrap().clone();
    match answer {
        Jwks::Body(content_type, body) => {
            ([(header::CONTENT_TYPE, content_type)], body).into_response()
        }
        Jwks::Status(code) => StatusCode::from_u16(code).unwrap().into_response(),
        Jwks::Slow(delay, body) => {
            tokio::time::sleep(delay).await;
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Jwks::Huge(size, keys) => {
            let chunk = bytes::Bytes::from(vec![b' '; 64 * 1024]);
            let chunks = size / chunk.len();
            let open = keys.strip_suffix("]}").unwrap_or(&keys).to_owned();
            let stream = futures_util::stream::iter(
                std::iter::once(bytes::Bytes::from(open)).chain(
                    std::iter::repeat_n(chunk, chunks)
                        .chain(std::iter::once(bytes::Bytes::from_static(b"]}"))),
                ),
            )
            .map(Ok::<_, std::io::Error>);
            (
                [(header::CONTENT_TYPE, "application/json")],
                Body::from_stream(stream),
            )
                .into_response()
        }
    }
}

use futures_util::StreamExt as _;

const ISSUER: &str = "https://idp.faults.example/";

/// A `jwt` provider on `url` whose on-demand refresh has no cooldown, so every unknown kid fetches.
async fn jwt_server(url: &str, extra: &str) -> TestServer {
    let yaml = format!(
        "server: {{drain_seconds: 0}}
providers:
  - name: corp
    type: jwt
    issuer: '{ISSUER}'
    jwks_uri: '{url}'
    audiences: [api]
    algorithms: [ES256, RS256]
    jwks: {{unknown_kid_cooldown_seconds: 0, timeout_seconds: 1{extra}}}"
    );
    TestServer::start(&yaml).await.ready().await
}

fn status(response: &CheckResponse) -> u32 {
    match &response.http_response {
        Some(HttpResponse::OkResponse(_)) => 200,
        Some(HttpResponse::DeniedResponse(d)) => d.status.as_ref().unwrap().code as u32,
        Some(HttpResponse::ErrorResponse(e)) => e.status.as_ref().unwrap().code as u32,
        None => panic!("no http response: {response:?}"),
    }
}

/// An error answer: gRPC UNAVAILABLE and a 503, never an allow.
fn assert_error(response: &CheckResponse, what: &str) {
    assert_eq!(status(response), 503, "{what}: {response:?}");
    assert_eq!(
        response.status.as_ref().unwrap().code,
        14,
        "{what}: UNAVAILABLE"
    );
}

fn failed_fetches(metrics: &str) -> u64 {
    let series = "portcullis_jwks_fetches_total{provider=\"corp\",result=\"failed\"}";
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

/// Each broken key set answer: the fetch it triggers fails, the known key keeps working, the unknown kid
/// is denied, and the next good answer is taken.
#[tokio::test]
async fn a_broken_key_set_keeps_the_known_keys_and_denies_unknown_kids() {
    let known = TestKey::ec("known");
    let stranger = TestKey::ec("stranger");
    let jwks = JwksServer::start(&[&known]).await;
    let server = jwt_server(&jwks.url, "").await;
    let c = claims(ISSUER, "api");
    let mut wrong_alg = stranger.jwk();
    wrong_alg["alg"] = json!("RS256");
    let mut wrong_kty = stranger.jwk();
    wrong_kty["kty"] = json!("RSA");
    let mut oct = stranger.jwk();
    oct["kty"] = json!("oct");
    oct["k"] = json!(b64("secret"));
    let mut encryption = stranger.jwk();
    encryption["use"] = json!("enc");
    let keys = |k: Value| json!({ "keys": [k] }).to_string();
    let faults: Vec<(&str, Jwks)> = vec![
        ("500", Jwks::Status(500)),
        ("404", Jwks::Status(404)),
        (
            "garbage",
            Jwks::Body("application/json", "\u{0}\u{1}{{{".into()),
        ),
        (
            "html",
            Jwks::Body(
                "text/html",
                "<!doctype html><html><body>Service Unavailable</body></html>".into(),
            ),
        ),
        (
            "empty set",
            Jwks::Body("application/json", r#"{"keys":[]}"#.into()),
        ),
        (
            "not a set",
            Jwks::Body("application/json", r#"{"keys":{}}"#.into()),
        ),
        ("wrong alg", Jwks::Body("application/json", keys(wrong_alg))),
        ("wrong kty", Jwks::Body("application/json", keys(wrong_kty))),
        ("oct key", Jwks::Body("application/json", keys(oct))),
        (
            "encryption key",
            Jwks::Body("application/json", keys(encryption)),
        ),
    ];
    for (name, fault) in faults {
        jwks.set(fault);
        let hits = jwks.hits();
        let failed = failed_fetches(&server.metrics().await);
        let r = server.check_bearer(&stranger.token(&c)).await;
        assert_invalid_token(&r, "unknown key");
        assert_eq!(
            jwks.hits(),
            hits + 1,
            "{name}: the unknown kid fetched once"
        );
        assert_eq!(
            failed_fetches(&server.metrics().await),
            failed + 1,
            "{name}: the fetch failed"
        );
        ok(&server.check_bearer(&known.token(&c)).await);
        assert!(
            server.app.ready(),
            "{name}: still ready with the last good keys"
        );
    }
    // Recovery: the IdP publishes the new key.
    jwks.set(Jwks::Body(
        "application/json",
        key_set(&[&known, &stranger]),
    ));
    ok(&server.check_bearer(&stranger.token(&c)).await);
    ok(&server.check_bearer(&known.token(&c)).await);
}

/// A 50 MB answer is cut off at `jwks.max_response_bytes` (1 MiB by default), quickly: the key it
/// carries is never loaded.
#[tokio::test]
async fn a_huge_key_set_is_bounded() {
    let known = TestKey::ec("known");
    let stranger = TestKey::ec("stranger");
    let jwks = JwksServer::start(&[&known]).await;
    let server = jwt_server(&jwks.url, "").await;
    let c = claims(ISSUER, "api");
    jwks.set(Jwks::Huge(50 << 20, key_set(&[&known, &stranger])));
    let started = Instant::now();
    assert_invalid_token(
        &server.check_bearer(&stranger.token(&c)).await,
        "unknown key",
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused without reading 50 MB: {:?}",
        started.elapsed()
    );
    assert_eq!(failed_fetches(&server.metrics().await), 1);
    ok(&server.check_bearer(&known.token(&c)).await);
}

/// A key set endpoint that is down (nothing listens) or slower than the timeout.
#[tokio::test]
async fn a_key_set_endpoint_down_or_slow_keeps_the_known_keys() {
    let known = TestKey::ec("known");
    let stranger = TestKey::ec("stranger");
    let c = claims(ISSUER, "api");

    // Down: the endpoint stops listening after the first load.
    let jwks = JwksServer::start(&[&known]).await;
    let server = jwt_server(&jwks.url, "").await;
    drop(jwks);
    assert_invalid_token(
        &server.check_bearer(&stranger.token(&c)).await,
        "unknown key",
    );
    assert_eq!(failed_fetches(&server.metrics().await), 1);
    ok(&server.check_bearer(&known.token(&c)).await);
    drop(server);

    // Slow: 3 s against a 1 s timeout.
    let jwks = JwksServer::start(&[&known]).await;
    let server = jwt_server(&jwks.url, "").await;
    jwks.set(Jwks::Slow(
        Duration::from_secs(3),
        key_set(&[&known, &stranger]),
    ));
    let started = Instant::now();
    assert_invalid_token(
        &server.check_bearer(&stranger.token(&c)).await,
        "unknown key",
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_millis(2900),
        "the timeout (1 s) ends the wait: {waited:?}"
    );
    assert_eq!(failed_fetches(&server.metrics().await), 1);
    ok(&server.check_bearer(&known.token(&c)).await);
}

/// While an unknown kid's refresh hangs, checks with known (and cached) tokens answer at once.
#[tokio::test]
async fn no_check_waits_for_a_hanging_refresh() {
    let known = TestKey::ec("known");
    let stranger = TestKey::ec("stranger");
    let jwks = JwksServer::start(&[&known]).await;
    let server = jwt_server(&jwks.url, "").await;
    let c = claims(ISSUER, "api");
    let cached = known.token(&c);
    ok(&server.check_bearer(&cached).await);
    jwks.set(Jwks::Slow(Duration::from_secs(5), key_set(&[&known])));

    let hits = jwks.hits();
    let auth = format!("Bearer {}", stranger.token(&c));
    let mut client = server.client().await;
    let hanging = tokio::spawn(async move {
        client
            .check(request(&[("authorization", &auth)]))
            .await
            .unwrap()
            .into_inner()
    });
    // The refresh is under way.
    for _ in 0..100 {
        if jwks.hits() > hits {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(jwks.hits(), hits + 1, "the refresh started");
    for token in [cached, known.token(&c)] {
        let started = Instant::now();
        ok(&server.check_bearer(&token).await);
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "a known token waited {:?}",
            started.elapsed()
        );
    }
    assert!(!hanging.is_finished(), "the refresh still hangs");
    assert_invalid_token(&hanging.await.unwrap(), "unknown key");
}

/// The secret every introspection config here reads.
fn secrets() -> Sources {
    portcullis::io::sources_with([("S".to_owned(), "x".to_owned())].into())
}

/// Introspection, webhook and GitHub: a timeout and a 5xx are error answers, never allows, and the next
/// good answer is taken (nothing failed is cached).
#[tokio::test]
async fn upstream_timeouts_and_5xx_are_errors_and_recover() {
    let up = FakeUpstream::start().await;
    up.answer(
        "introspect:opaque-good",
        200,
        json!({"active": true, "sub": "alice", "exp": now() + 600}),
    );
    up.answer("webhook:wh-good", 200, json!({"principal": "team-a"}));
    up.answer("user:gho_good", 200, json!({"login": "octocat", "id": 1}));
    up.answer("orgs:gho_good", 200, json!([{"login": "acme"}]));
    let cases = [
        (
            "introspection",
            format!(
                "  - {{name: idp, type: introspection, endpoint: '{}', client_id: c, client_secret: {{env: S}}, upstream: {{timeout_seconds: 1}}}}",
                up.url("/introspect")
            ),
            "opaque-good",
            "alice",
        ),
        (
            "webhook",
            format!(
                "  - {{name: hook, type: webhook, endpoint: '{}', upstream: {{timeout_seconds: 1}}}}",
                up.url("/webhook")
            ),
            "wh-good",
            "team-a",
        ),
        (
            "github",
            format!(
                "  - {{name: gh, type: github, api_base: '{}', allowed_orgs: [acme], upstream: {{timeout_seconds: 1}}}}",
                up.url("")
            ),
            "gho_good",
            "octocat",
        ),
    ];
    for (name, provider, token, subject) in cases {
        let yaml = format!("server: {{drain_seconds: 0}}\nproviders:\n{provider}");
        let server = TestServer::start_with(&yaml, secrets(), Clock::system())
            .await
            .ready()
            .await;
        up.set_mode(Mode::Slow(Duration::from_secs(3)));
        let started = Instant::now();
        assert_error(
            &server.check_bearer(token).await,
            &format!("{name} timeout"),
        );
        assert!(
            started.elapsed() < Duration::from_millis(2900),
            "{name}: the 1 s timeout ended the wait"
        );
        for mode in [Mode::Fail500, Mode::Garbage, Mode::Huge] {
            up.set_mode(mode);
            assert_error(
                &server.check_bearer(token).await,
                &format!("{name} {mode:?}"),
            );
        }
        up.set_mode(Mode::Normal);
        let r = server.check_bearer(token).await;
        assert_eq!(
            header(&ok(&r).headers, "x-auth-subject"),
            Some(subject),
            "{name} recovered"
        );
    }
}

/// `exp` and `nbf` at the edges of the leeway, on the injectable clock: a token is expired from
/// `exp + leeway` on and valid from `nbf - leeway` on; a cached token expires too.
#[tokio::test]
async fn tokens_at_the_edges_of_exp_and_nbf() {
    let key = TestKey::ec("k");
    let jwks = JwksServer::start(&[&key]).await;
    let t = 2_000_000_000;
    let clock = Clock::manual(t);
    let yaml = format!(
        "server: {{drain_seconds: 0}}
providers:
  - name: corp
    type: jwt
    issuer: '{ISSUER}'
    jwks_uri: '{}'
    audiences: [api]
    algorithms: [ES256]
    leeway_seconds: 30",
        jwks.url
    );
    let server = TestServer::start_with(
        &yaml,
        portcullis::io::sources_with(Default::default()),
        clock.clone(),
    )
    .await
    .ready()
    .await;
    let mut c = claims(ISSUER, "api");
    c["iat"] = json!(t - 100);
    c["exp"] = json!(t + 100);
    c["nbf"] = json!(t + 50);
    let token = key.token(&c);
    let at = |now: i64| {
        clock.set(now);
        server.check_bearer(&token)
    };
    // nbf - leeway - 1: not yet; nbf - leeway: valid.
    assert_invalid_token(&at(t + 50 - 31).await, "not valid yet");
    ok(&at(t + 50 - 30).await);
    ok(&at(t + 50).await);
    // Well inside: allowed (and cached).
    ok(&at(t + 99).await);
    // exactly exp: still inside the leeway.
    ok(&at(t + 100).await);
    // exp + leeway - 1: the last valid second; exp + leeway: expired, cached or not.
    ok(&at(t + 100 + 29).await);
    assert_invalid_token(&at(t + 100 + 30).await, "expired");
    assert_invalid_token(&at(t + 100 + 3600).await, "expired");

    // A fractional exp: expired once now + leeway reaches it.
    let mut f = claims(ISSUER, "api");
    f["iat"] = json!(t - 100);
    f["exp"] = json!((t + 10) as f64 + 0.5);
    let fractional = key.token(&f);
    clock.set(t + 10 + 30);
    ok(&server.check_bearer(&fractional).await);
    clock.set(t + 10 + 31);
    assert_invalid_token(&server.check_bearer(&fractional).await, "expired");

    // A token without leeway room: exp == now is expired when leeway is 0.
    drop(server);
    let zero = yaml.replace("leeway_seconds: 30", "leeway_seconds: 0");
    let server = TestServer::start_with(
        &zero,
        portcullis::io::sources_with(Default::default()),
        clock.clone(),
    )
    .await
    .ready()
    .await;
    clock.set(t + 99);
    let mut z = claims(ISSUER, "api");
    z["iat"] = json!(t - 100);
    z["exp"] = json!(t + 100);
    let token = key.token(&z);
    ok(&server.check_bearer(&token).await);
    clock.set(t + 100);
    assert_invalid_token(&server.check_bearer(&token).await, "expired");
}
