//! portcullis-test: the shared test harness of the root package's integration tests and benches.
//! Keys made at test time, tokens minted by hand (so tests can also craft hostile ones), a fake IdP that
//! is a real HTTP server on loopback, and a real portcullis server on 127.0.0.1:0.
//!
//! # Layout
//! - this file: [`TestKey`] and token minting ([`claims`], [`b64`]), [`FakeIdp`] (discovery and JWKS,
//!   with failure modes and hit counters), [`TestServer`] (the real server on free loopback ports, with
//!   its gRPC client) and the request and answer helpers.
//! - [`upstream`]: [`upstream::FakeUpstream`], an introspection/webhook/GitHub/TokenReview endpoint
//!   scripted per test.
//! - [`tls`]: a test CA, certificates, and an HTTPS server on loopback.
//! - [`redis`]: a real `redis-server` (Debian package) on a free loopback port.
//!
//! It depends on the root library (`portcullis`); the root package uses it as a dev-dependency only.

pub mod redis;
pub mod tls;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_SHA256,
};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use portcullis::pb::auth::authorization_client::AuthorizationClient;
use portcullis::pb::auth::{
    attribute_context, check_response, AttributeContext, CheckRequest, CheckResponse,
    DeniedHttpResponse, OkHttpResponse,
};
use portcullis::server::{self, App};
use portcullis::Clock;
use portcullis::{Config, Sources};

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A signing key made at test time.
pub enum TestKey {
    Rsa { kid: String, pair: RsaKeyPair },
    Ec { kid: String, pair: EcdsaKeyPair },
    Ed { kid: String, pair: Ed25519KeyPair },
}

impl TestKey {
    pub fn rsa(kid: &str) -> TestKey {
        TestKey::Rsa {
            kid: kid.into(),
            pair: RsaKeyPair::generate(KeySize::Rsa2048).unwrap(),
        }
    }

    pub fn ec(kid: &str) -> TestKey {
        TestKey::Ec {
            kid: kid.into(),
            pair: EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap(),
        }
    }

    pub fn ed(kid: &str) -> TestKey {
        TestKey::Ed {
            kid: kid.into(),
            pair: Ed25519KeyPair::generate().unwrap(),
        }
    }

    pub fn kid(&self) -> &str {
        match self {
            TestKey::Rsa { kid, .. } | TestKey::Ec { kid, .. } | TestKey::Ed { kid, .. } => kid,
        }
    }

    pub fn alg(&self) -> &'static str {
        match self {
            TestKey::Rsa { .. } => "RS256",
            TestKey::Ec { .. } => "ES256",
            TestKey::Ed { .. } => "EdDSA",
        }
    }

    /// The public JWK, without `alg` (so the key type decides).
    pub fn jwk(&self) -> Value {
        match self {
            TestKey::Rsa { kid, pair } => {
                let public = pair.public_key();
                json!({
                    "kty": "RSA", "kid": kid, "use": "sig",
                    "n": b64(public.modulus().big_endian_without_leading_zero()),
                    "e": b64(public.exponent().big_endian_without_leading_zero()),
                })
            }
            TestKey::Ec { kid, pair } => {
                let point = pair.public_key().as_ref();
                json!({"kty": "EC", "crv": "P-256", "kid": kid, "x": b64(&point[1..33]), "y": b64(&point[33..65])})
            }
            TestKey::Ed { kid, pair } => {
                json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64(pair.public_key().as_ref())})
            }
        }
    }

    /// The RSA modulus, the "public key" an attacker would use as an HMAC secret.
    pub fn public_bytes(&self) -> Vec<u8> {
        match self {
            TestKey::Rsa { pair, .. } => pair.public_key().as_ref().to_vec(),
            TestKey::Ec { pair, .. } => pair.public_key().as_ref().to_vec(),
            TestKey::Ed { pair, .. } => pair.public_key().as_ref().to_vec(),
        }
    }

    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match self {
            TestKey::Rsa { pair, .. } => {
                let mut sig = vec![0; pair.public_modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &rng, message, &mut sig)
                    .unwrap();
                sig
            }
            TestKey::Ec { pair, .. } => pair.sign(&rng, message).unwrap().as_ref().to_vec(),
            TestKey::Ed { pair, .. } => pair.sign(message).as_ref().to_vec(),
        }
    }

    /// A token with this key's usual header (`alg`, `kid`, `typ: at+jwt`).
    pub fn token(&self, claims: &Value) -> String {
        let header = json!({"alg": self.alg(), "kid": self.kid(), "typ": "at+jwt"});
        self.token_with_header(&header, claims)
    }

    /// A token with any header, signed by this key.
    pub fn token_with_header(&self, header: &Value, claims: &Value) -> String {
        let message = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
        let sig = self.sign(message.as_bytes());
        format!("{message}.{}", b64(sig))
    }
}

/// An HMAC-SHA256 token keyed with `secret`.
pub fn hs256_token(secret: &[u8], header: &Value, claims: &Value) -> String {
    let message = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    let tag = aws_lc_rs::hmac::sign(&key, message.as_bytes());
    format!("{message}.{}", b64(tag.as_ref()))
}

/// Standard claims for `issuer`/`audience`, valid for an hour.
pub fn claims(issuer: &str, audience: &str) -> Value {
    let now = now();
    json!({
        "iss": issuer, "aud": audience, "sub": "user-1", "iat": now, "exp": now + 3600,
        "scope": "read:data write:data",
    })
}

/// How the fake IdP answers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum IdpMode {
    Normal,
    Fail500,
    Garbage,
    Slow(Duration),
}

struct IdpState {
    issuer: String,
    keys: Mutex<Vec<Value>>,
    mode: Mutex<IdpMode>,
    cache_control: Mutex<Option<String>>,
    discovery_hits: AtomicUsize,
    jwks_hits: AtomicUsize,
}

/// A real OIDC-ish IdP on loopback: discovery at `/.well-known/openid-configuration`, keys at `/jwks`.
pub struct FakeIdp {
    pub addr: SocketAddr,
    pub issuer: String,
    state: Arc<IdpState>,
    task: Option<JoinHandle<()>>,
}

impl FakeIdp {
    pub async fn start() -> FakeIdp {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let issuer = format!("http://{addr}");
        let state = Arc::new(IdpState {
            issuer: issuer.clone(),
            keys: Mutex::new(Vec::new()),
            mode: Mutex::new(IdpMode::Normal),
            cache_control: Mutex::new(None),
            discovery_hits: AtomicUsize::new(0),
            jwks_hits: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .with_state(Arc::clone(&state));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeIdp {
            addr,
            issuer,
            state,
            task: Some(task),
        }
    }

    pub fn jwks_uri(&self) -> String {
        format!("{}/jwks", self.issuer)
    }

    pub fn set_keys(&self, keys: &[&TestKey]) {
        *self.state.keys.lock().unwrap() = keys.iter().map(|k| k.jwk()).collect();
    }

    pub fn set_raw_keys(&self, keys: Vec<Value>) {
        *self.state.keys.lock().unwrap() = keys;
    }

    pub fn set_mode(&self, mode: IdpMode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    pub fn set_cache_control(&self, value: Option<&str>) {
        *self.state.cache_control.lock().unwrap() = value.map(str::to_owned);
    }

    pub fn jwks_hits(&self) -> usize {
        self.state.jwks_hits.load(Ordering::SeqCst)
    }

    pub fn discovery_hits(&self) -> usize {
        self.state.discovery_hits.load(Ordering::SeqCst)
    }

    /// Stops serving: the listener and every open connection close.
    pub fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Drop for FakeIdp {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn answer(state: &IdpState, body: Value) -> Response {
    let mode = *state.mode.lock().unwrap();
    match mode {
        IdpMode::Normal => {}
        IdpMode::Fail500 => return (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response(),
        IdpMode::Garbage => return (StatusCode::OK, "<html>not json").into_response(),
        IdpMode::Slow(delay) => tokio::time::sleep(delay).await,
    }
    let cache_control = state.cache_control.lock().unwrap().clone();
    let mut response = axum::Json(body).into_response();
    if let Some(cc) = cache_control {
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, cc.parse().unwrap());
    }
    response
}

async fn discovery(State(state): State<Arc<IdpState>>) -> Response {
    state.discovery_hits.fetch_add(1, Ordering::SeqCst);
    let body = json!({"issuer": state.issuer, "jwks_uri": format!("{}/jwks", state.issuer)});
    answer(&state, body).await
}

async fn jwks(State(state): State<Arc<IdpState>>) -> Response {
    state.jwks_hits.fetch_add(1, Ordering::SeqCst);
    let keys = state.keys.lock().unwrap().clone();
    answer(&state, json!({ "keys": keys })).await
}

/// A portcullis server on 127.0.0.1:0.
pub struct TestServer {
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
    /// The HTTP forward-auth listener, when the config sets `server.http_listen` (any address: the test
    /// binds 127.0.0.1:0 instead).
    pub http: Option<SocketAddr>,
    pub app: Arc<App>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), server::ServeError>>>,
}

impl TestServer {
    pub async fn start(yaml: &str) -> TestServer {
        TestServer::start_with(
            yaml,
            portcullis::io::sources_with(Default::default()),
            Clock::system(),
        )
        .await
    }

    pub async fn start_with(yaml: &str, secrets: Sources, clock: Clock) -> TestServer {
        let config =
            Config::from_yaml_str(yaml).unwrap_or_else(|e| panic!("test config: {:?}", e.0));
        TestServer::start_config(config, secrets, clock).await
    }

    /// Serves a configuration already parsed (from fragments, say).
    pub async fn start_config(config: Config, secrets: Sources, clock: Clock) -> TestServer {
        let app = Arc::new(
            App::from_config(&config, None, secrets, clock)
                .unwrap_or_else(|e| panic!("test state or runtime: {:?}", e.0)),
        );
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = match config.server.http_listen {
            Some(_) => Some(TcpListener::bind("127.0.0.1:0").await.unwrap()),
            None => None,
        };
        let (grpc_addr, admin_addr) = (grpc.local_addr().unwrap(), admin.local_addr().unwrap());
        let http_addr = http.as_ref().map(|l| l.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let listeners = server::Listeners { grpc, admin, http };
        let task = tokio::spawn(server::run(Arc::clone(&app), listeners, async {
            let _ = rx.await;
        }));
        TestServer {
            grpc: grpc_addr,
            admin: admin_addr,
            http: http_addr,
            app,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Waits (at most 10 s) until every provider's keys are loaded.
    pub async fn ready(self) -> TestServer {
        for _ in 0..200 {
            if self.app.ready() {
                return self;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("server did not become ready");
    }

    pub async fn client(&self) -> AuthorizationClient<tonic::transport::Channel> {
        AuthorizationClient::connect(format!("http://{}", self.grpc))
            .await
            .unwrap()
    }

    /// Sends one CheckRequest on a new connection.
    pub async fn send(&self, request: CheckRequest) -> CheckResponse {
        self.client()
            .await
            .check(request)
            .await
            .unwrap()
            .into_inner()
    }

    /// The admin port's `/metrics` text.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn check(&self, headers: &[(&str, &str)]) -> CheckResponse {
        self.client()
            .await
            .check(request(headers))
            .await
            .unwrap()
            .into_inner()
    }

    pub async fn check_bearer(&self, token: &str) -> CheckResponse {
        let auth = format!("Bearer {token}");
        self.check(&[("authorization", &auth)]).await
    }

    /// Starts shutting down; returns the serving task to await.
    pub fn begin_shutdown(&mut self) -> JoinHandle<Result<(), server::ServeError>> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.take().expect("shut down once")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A CheckRequest for `method` and `path` (with its query string).
pub fn request_to(method: &str, path: &str, headers: &[(&str, &str)]) -> CheckRequest {
    let mut req = request(headers);
    let http = http_of(&mut req);
    http.method = method.into();
    http.path = path.into();
    req
}

/// The HTTP part of a CheckRequest built by [`request`].
pub fn http_of(req: &mut CheckRequest) -> &mut attribute_context::HttpRequest {
    req.attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
        .expect("built by request()")
}

/// A CheckRequest as Envoy sends it (lower-case header names, joined repeats).
pub fn request(headers: &[(&str, &str)]) -> CheckRequest {
    let mut map = std::collections::HashMap::new();
    for (k, v) in headers {
        map.entry(k.to_ascii_lowercase())
            .and_modify(|old: &mut String| {
                old.push(',');
                old.push_str(v);
            })
            .or_insert_with(|| v.to_string());
    }
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(attribute_context::Request {
                time: None,
                http: Some(attribute_context::HttpRequest {
                    id: "req-1".into(),
                    method: "GET".into(),
                    path: "/api/items?x=1".into(),
                    host: "api.example.com".into(),
                    headers: map,
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
    }
}

pub fn ok(response: &CheckResponse) -> &OkHttpResponse {
    assert_eq!(
        response.status.as_ref().map(|s| s.code),
        Some(0),
        "expected allow: {response:?}"
    );
    match &response.http_response {
        Some(check_response::HttpResponse::OkResponse(ok)) => ok,
        other => panic!("expected ok_response, got {other:?}"),
    }
}

pub fn denied(response: &CheckResponse) -> &DeniedHttpResponse {
    match &response.http_response {
        Some(check_response::HttpResponse::DeniedResponse(d)) => d,
        other => panic!("expected denied_response, got {other:?}"),
    }
}

/// The value of a header in a list of mutations.
pub fn header<'a>(
    headers: &'a [portcullis::pb::core::HeaderValueOption],
    name: &str,
) -> Option<&'a str> {
    headers
        .iter()
        .filter_map(|h| h.header.as_ref())
        .find(|h| h.key == name)
        .map(|h| h.value.as_str())
}

/// Asserts a 401 `invalid_token` denial whose description mentions `needle`; returns the deny reason label.
pub fn assert_invalid_token(response: &CheckResponse, needle: &str) -> String {
    let status = response.status.as_ref().unwrap();
    assert_eq!(status.code, 16, "UNAUTHENTICATED: {response:?}");
    let d = denied(response);
    assert_eq!(d.status.as_ref().unwrap().code, 401);
    let challenge = header(&d.headers, "www-authenticate").unwrap();
    assert!(challenge.starts_with("Bearer realm=\""), "{challenge}");
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    assert!(
        challenge.contains(needle),
        "{challenge} should mention {needle}"
    );
    let body: Value = serde_json::from_str(&d.body).unwrap();
    assert_eq!(body["error"], "invalid_token");
    status.message.clone()
}

/// A client's DPoP key (P-256) and the proofs it makes (RFC 9449), for the tests that bind tokens to it.
pub struct DpopHolder {
    pub key: TestKey,
}

impl DpopHolder {
    pub fn new(kid: &str) -> DpopHolder {
        DpopHolder {
            key: TestKey::ec(kid),
        }
    }

    /// The public key as the proof's `jwk` header carries it.
    pub fn public_jwk(&self) -> Value {
        let jwk = self.key.jwk();
        serde_json::json!({"kty": "EC", "crv": jwk["crv"], "x": jwk["x"], "y": jwk["y"]})
    }

    /// The RFC 7638 thumbprint of the public key (a bound token's `cnf.jkt`).
    pub fn jkt(&self) -> String {
        let jwk = self.public_jwk();
        let canonical = format!(
            r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
            jwk["crv"].as_str().unwrap(),
            jwk["x"].as_str().unwrap(),
            jwk["y"].as_str().unwrap()
        );
        b64(sha256(canonical.as_bytes()))
    }

    /// A fresh proof (new `jti`, issued now) for `method uri` with `token`.
    pub fn proof(&self, method: &str, uri: &str, token: &str) -> String {
        let mut jti = [0u8; 12];
        aws_lc_rs::rand::fill(&mut jti).unwrap();
        let header =
            serde_json::json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.public_jwk()});
        let claims = serde_json::json!({
            "jti": b64(jti), "htm": method, "htu": uri, "iat": now(),
            "ath": b64(sha256(token.as_bytes())),
        });
        self.key.token_with_header(&header, &claims)
    }
}

fn sha256(bytes: &[u8]) -> aws_lc_rs::digest::Digest {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes)
}

/// A `GET path` check with `Authorization: Bearer <token>`, on a new connection.
pub async fn check_path(server: &TestServer, path: &str, token: &str) -> CheckResponse {
    let auth = format!("Bearer {token}");
    server
        .send(request_to("GET", path, &[("authorization", &auth)]))
        .await
}

/// The HTTP status of an answer: 200 for an allow, else the denial's.
pub fn http_status(response: &CheckResponse) -> u32 {
    match response.status.as_ref().map(|s| s.code) {
        Some(0) => 200,
        _ => denied(response)
            .status
            .as_ref()
            .map_or(0, |s| s.code as u32),
    }
}
