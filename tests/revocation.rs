//! Revocation end to end: the admin API and the Auth0 log stream on the admin port, the denylist applied
//! to cached tokens, and two portcullis instances sharing one real `redis-server` (started by the test on a
//! free loopback port, without persistence): propagation within 1 s, DPoP replay caught across instances,
//! Redis stopped and restarted mid-run.

use portcullis_test as common;

use common::upstream::FakeUpstream;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::redis::RedisServer;
use common::*;
use portcullis::pb::auth::CheckResponse;
use portcullis::portcullis_core::recorder::NoRecorder;
use portcullis::{Clock, Config, SharedState, Sources};
use serde_json::{json, Value};

const AUD: &str = "https://api.example.com/";
const ADMIN: &str = "admin-secret-0123456789";
const AUTH0: &str = "auth0-stream-secret-9876543210";

fn secrets() -> Sources {
    portcullis::io::sources_with(HashMap::from([
        ("ADMIN_SECRET".to_owned(), ADMIN.to_owned()),
        ("AUTH0_SECRET".to_owned(), AUTH0.to_owned()),
    ]))
}

fn config(idp: &FakeIdp, state: &str) -> String {
    format!(
        "
server:
  drain_seconds: 0
providers:
  - name: test-idp
    type: jwt
    issuer: {iss}
    audiences: [{AUD}]
revocation:
  admin_secret: {{env: ADMIN_SECRET}}
  auth0_log_stream_secret: {{env: AUTH0_SECRET}}
  auth0_max_body_bytes: 4096
{state}
",
        iss = idp.issuer
    )
}

fn redis_state(redis: &RedisServer) -> String {
    format!(
        "state: {{backend: redis, url: '{}', key_prefix: 'test:', resync_seconds: 1}}",
        redis.url()
    )
}

async fn server(idp: &FakeIdp, state: &str, clock: Clock) -> TestServer {
    TestServer::start_with(&config(idp, state), secrets(), clock)
        .await
        .ready()
        .await
}

fn token(key: &TestKey, idp: &FakeIdp, sub: &str, iat: i64, extra: Value) -> String {
    let mut claims =
        json!({"iss": idp.issuer, "aud": AUD, "sub": sub, "iat": iat, "exp": iat + 3600});
    for (k, v) in extra.as_object().unwrap() {
        claims[k] = v.clone();
    }
    key.token(&claims)
}

fn allowed(response: &CheckResponse) -> bool {
    response.status.as_ref().map(|s| s.code) == Some(0)
}

fn assert_revoked(response: &CheckResponse) {
    assert_invalid_token(response, "revoked");
}

async fn admin(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    secret: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request =
        reqwest::Client::new().request(method, format!("http://{}{path}", server.admin));
    if let Some(secret) = secret {
        request = request.bearer_auth(secret);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn revoke(server: &TestServer, body: Value) -> (u16, Value) {
    admin(
        server,
        reqwest::Method::POST,
        "/admin/revocations",
        Some(ADMIN),
        Some(body),
    )
    .await
}

async fn auth0_batch(server: &TestServer, secret: &str, body: String) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("http://{}/events/auth0", server.admin))
        .bearer_auth(secret)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Polls `server` with `token` until it is denied as revoked; fails after `within`.
async fn denied_within(server: &TestServer, token: &str, within: Duration) {
    let start = Instant::now();
    loop {
        let response = server.check_bearer(token).await;
        if !allowed(&response) {
            assert_revoked(&response);
            return;
        }
        assert!(start.elapsed() < within, "still allowed after {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn readyz(server: &TestServer) -> (u16, String) {
    let response = reqwest::get(format!("http://{}/readyz", server.admin))
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn the_admin_api_needs_its_secret() {
    let idp = FakeIdp::start().await;
    let key = TestKey::rsa("k1");
    idp.set_keys(&[&key]);
    let server = server(&idp, "", Clock::system()).await;
    let body = json!({"kind": "sub", "value": "alice"});
    use reqwest::Method;
    for secret in [
        None,
        Some("wrong"),
        Some(""),
        Some("admin-secret-012345678"),
    ] {
        let (status, _) = admin(
            &server,
            Method::POST,
            "/admin/revocations",
            secret,
            Some(body.clone()),
        )
        .await;
        assert_eq!(status, 401, "POST with {secret:?}");
        let (status, _) = admin(&server, Method::GET, "/admin/revocations", secret, None).await;
        assert_eq!(status, 401, "GET with {secret:?}");
        let (status, _) = admin(
            &server,
            Method::DELETE,
            "/admin/revocations/sub/alice",
            secret,
            None,
        )
        .await;
        assert_eq!(status, 401, "DELETE with {secret:?}");
    }
    let (status, _) = auth0_batch(&server, ADMIN, "[]".into()).await;
    assert_eq!(status, 401, "the admin secret is not the stream's");

    // The right secret: create, list, delete; bad requests are refused.
    let (status, entry) = revoke(
        &server,
        json!({"kind": "jti", "value": "t-1", "issuer": idp.issuer, "ttl_seconds": 60}),
    )
    .await;
    assert_eq!(status, 201, "{entry}");
    assert_eq!(
        entry["expires_at"].as_i64().unwrap() - entry["revoked_at"].as_i64().unwrap(),
        60
    );
    let (status, listed) = admin(
        &server,
        Method::GET,
        "/admin/revocations",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(listed["revocations"], json!([entry]));
    assert_eq!(
        revoke(&server, json!({"kind": "email", "value": "x"}))
            .await
            .0,
        400
    );
    assert_eq!(
        revoke(&server, json!({"kind": "sub", "value": ""})).await.0,
        400
    );
    assert_eq!(
        revoke(
            &server,
            json!({"kind": "sub", "value": "a", "ttl_seconds": 0})
        )
        .await
        .0,
        400
    );
    let (status, removed) = admin(
        &server,
        Method::DELETE,
        "/admin/revocations/jti/t-1",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!((status, removed), (200, json!({"removed": 1})));
    assert_eq!(
        admin(
            &server,
            Method::DELETE,
            "/admin/revocations/jti/t-1",
            Some(ADMIN),
            None
        )
        .await
        .0,
        404
    );
}

#[tokio::test]
async fn the_endpoints_are_off_without_their_secrets() {
    let idp = FakeIdp::start().await;
    let key = TestKey::rsa("k1");
    idp.set_keys(&[&key]);
    let yaml = format!(
        "providers: [{{name: a, type: jwt, issuer: '{}', audiences: ['{AUD}']}}]",
        idp.issuer
    );
    let server = TestServer::start(&yaml).await.ready().await;
    let (status, _) = revoke(&server, json!({"kind": "sub", "value": "alice"})).await;
    assert_eq!(status, 404);
    assert_eq!(auth0_batch(&server, AUTH0, "[]".into()).await.0, 404);
}

#[tokio::test]
async fn a_revoked_token_is_denied_even_from_the_cache_and_a_new_sign_in_works() {
    let idp = FakeIdp::start().await;
    let key = TestKey::rsa("k1");
    idp.set_keys(&[&key]);
    let t0 = now();
    let clock = Clock::manual(t0);
    let server = server(&idp, "", clock.clone()).await;
    let old = token(
        &key,
        &idp,
        "alice",
        t0 - 60,
        json!({"jti": "j-1", "sid": "s-1", "azp": "spa"}),
    );
    // Verified twice: the second answer comes from the verified-token cache.
    assert!(allowed(&server.check_bearer(&old).await));
    assert!(allowed(&server.check_bearer(&old).await));

    let (status, _) = revoke(&server, json!({"kind": "sub", "value": "alice"})).await;
    assert_eq!(status, 201);
    assert_revoked(&server.check_bearer(&old).await);
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("portcullis_checks_total{decision=\"deny\",reason=\"revoked\",route=\"default\",provider=\"test-idp\",transport=\"grpc\"} 1"),
        "{metrics}"
    );
    // Signing in again after the revocation gives a token that works once its `iat` is past the
    // providers' leeway (30 s by default): one up to that much newer may come from an IdP whose clock runs
    // ahead of ours, minted before the revocation (issue 28 finding 11).
    clock.set(t0 + 40);
    let ahead = token(&key, &idp, "alice", t0 + 20, json!({}));
    assert_revoked(&server.check_bearer(&ahead).await);
    let fresh = token(&key, &idp, "alice", t0 + 31, json!({}));
    assert!(allowed(&server.check_bearer(&fresh).await));

    // jti, sid and client entries, and an issuer scope that does not match.
    let bob = |extra: Value| token(&key, &idp, "bob", t0, extra);
    let by_jti = bob(json!({"jti": "j-2"}));
    let by_sid = bob(json!({"sid": "s-2"}));
    let by_client = bob(json!({"azp": "cli"}));
    for t in [&by_jti, &by_sid, &by_client] {
        assert!(allowed(&server.check_bearer(t).await));
    }
    revoke(&server, json!({"kind": "jti", "value": "j-2"})).await;
    revoke(&server, json!({"kind": "sid", "value": "s-2"})).await;
    revoke(&server, json!({"kind": "client_id", "value": "cli"})).await;
    revoke(
        &server,
        json!({"kind": "sub", "value": "bob", "issuer": "https://elsewhere.example/"}),
    )
    .await;
    for t in [&by_jti, &by_sid, &by_client] {
        assert_revoked(&server.check_bearer(t).await);
    }
    assert!(allowed(
        &server.check_bearer(&bob(json!({"jti": "j-3"}))).await
    ));
}

/// An Auth0 log stream batch, as the Custom Webhook posts it (without `date`, so entries are made now; a
/// dated event revokes the tokens issued before its date, see the unit tests of `revocation::auth0`).
fn batch(events: &[(&str, &str, &str)]) -> String {
    let events: Vec<Value> = events
        .iter()
        .map(|(log_id, kind, user)| {
            json!({"log_id": log_id, "data": {
                "type": kind, "description": "",
                "client_id": "spa", "user_id": user, "details": {}}})
        })
        .collect();
    Value::from(events).to_string()
}

#[tokio::test]
async fn two_instances_share_revocations_through_redis() {
    let redis = RedisServer::start();
    let idp = FakeIdp::start().await;
    let key = TestKey::rsa("k1");
    idp.set_keys(&[&key]);
    let a = server(&idp, &redis_state(&redis), Clock::system()).await;
    let b = server(&idp, &redis_state(&redis), Clock::system()).await;
    // Let both subscribe before the first change.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = now() - 60;

    // Through A's admin API, a token cached on B is denied on B within 1 s.
    let alice = token(&key, &idp, "auth0|alice", before, json!({}));
    assert!(allowed(&b.check_bearer(&alice).await));
    assert!(allowed(&b.check_bearer(&alice).await));
    assert_eq!(
        revoke(&a, json!({"kind": "sub", "value": "auth0|alice"}))
            .await
            .0,
        201
    );
    denied_within(&b, &alice, Duration::from_secs(1)).await;
    assert_revoked(&a.check_bearer(&alice).await);

    // An Auth0 batch posted to A revokes a user's tokens on both; the rest of the batch is ignored.
    let carol = token(&key, &idp, "auth0|carol", before, json!({}));
    let dave = token(&key, &idp, "auth0|dave", before, json!({}));
    for t in [&carol, &dave] {
        assert!(allowed(&a.check_bearer(t).await) && allowed(&b.check_bearer(t).await));
    }
    assert_eq!(auth0_batch(&a, "wrong", batch(&[])).await.0, 401);
    assert_eq!(auth0_batch(&a, ADMIN, batch(&[])).await.0, 401);
    let huge = batch(&[("1", "s", &"x".repeat(5000))]);
    assert_eq!(auth0_batch(&a, AUTH0, huge).await.0, 413);
    let events = batch(&[
        ("90020191", "s", "auth0|dave"),
        ("90020192", "slo", "auth0|carol"),
        ("90020193", "fp", "auth0|dave"),
    ]);
    let (status, answer) = auth0_batch(&a, AUTH0, events.clone()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, json!({"revoked": 1, "duplicates": 0, "ignored": 2}));
    denied_within(&b, &carol, Duration::from_secs(1)).await;
    assert_revoked(&a.check_bearer(&carol).await);
    assert!(allowed(&b.check_bearer(&dave).await));
    // Redelivered, to either instance: idempotent by log_id.
    for server in [&a, &b] {
        let (status, answer) = auth0_batch(server, AUTH0, events.clone()).await;
        assert_eq!(
            (status, answer),
            (200, json!({"revoked": 0, "duplicates": 1, "ignored": 2}))
        );
    }
    let listed = admin(
        &b,
        reqwest::Method::GET,
        "/admin/revocations",
        Some(ADMIN),
        None,
    )
    .await
    .1;
    assert_eq!(
        listed["revocations"].as_array().unwrap().len(),
        2,
        "{listed}"
    );

    // A deletion on B lifts the revocation on A too.
    let (status, _) = admin(
        &b,
        reqwest::Method::DELETE,
        "/admin/revocations/sub/auth0%7Ccarol",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let start = Instant::now();
    while !allowed(&a.check_bearer(&carol).await) {
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "still revoked on A"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn shared(redis: &RedisServer) -> SharedState {
    let yaml = format!(
        "providers: [{{name: a, type: jwt, issuer: 'https://a.example/', audiences: [x]}}]\n{}",
        redis_state(redis)
    );
    let config = Config::from_yaml_str(&yaml).unwrap();
    SharedState::from_config(&config, &secrets(), Clock::system(), &NoRecorder).unwrap()
}

#[tokio::test]
async fn a_replayed_dpop_proof_is_caught_across_instances_and_fails_closed_without_redis() {
    let mut redis = RedisServer::start();
    let (a, b) = (shared(&redis), shared(&redis));
    let expires = now() + 60;
    let proof = [7u8; 32];
    assert!(a.first_use(proof, expires).await.unwrap(), "first use");
    assert!(
        !b.first_use(proof, expires).await.unwrap(),
        "replayed on the other instance"
    );
    assert!(
        !a.first_use(proof, expires).await.unwrap(),
        "replayed on the same instance"
    );
    assert!(b.first_use([8u8; 32], expires).await.unwrap());

    redis.stop();
    assert!(
        a.first_use([9u8; 32], expires).await.is_err(),
        "no answer is an error"
    );
    assert!(a.fault().is_some());
    redis.restart();
    let mut answered = false;
    for _ in 0..50 {
        if let Ok(first) = a.first_use([9u8; 32], expires).await {
            assert!(first);
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(answered, "the connection manager reconnects");
}

#[tokio::test]
async fn redis_stopped_mid_run_keeps_the_denylist_and_sharing_resumes() {
    let mut redis = RedisServer::start();
    let idp = FakeIdp::start().await;
    let key = TestKey::rsa("k1");
    idp.set_keys(&[&key]);
    let a = server(&idp, &redis_state(&redis), Clock::system()).await;
    let b = server(&idp, &redis_state(&redis), Clock::system()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = now() - 60;
    let erin = token(&key, &idp, "erin", before, json!({}));
    let frank = token(&key, &idp, "frank", before, json!({}));
    let grace = token(&key, &idp, "grace", before, json!({}));
    assert_eq!(
        revoke(&a, json!({"kind": "sub", "value": "erin"})).await.0,
        201
    );
    denied_within(&b, &erin, Duration::from_secs(1)).await;

    redis.stop();
    // Both notice, stay ready, and say why on /readyz.
    for server in [&a, &b] {
        let mut body = String::new();
        for _ in 0..100 {
            let (status, text) = readyz(server).await;
            assert_eq!(status, 200, "readiness stays green: {text}");
            body = text;
            if body.contains("degraded") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            body.contains("degraded: shared state (redis) unavailable"),
            "{body}"
        );
        let metrics = server.metrics().await;
        assert!(
            metrics.contains("portcullis_state_up{backend=\"redis\"} 0"),
            "{metrics}"
        );
        assert!(
            !metrics.contains("portcullis_redis_errors_total 0\n"),
            "{metrics}"
        );
    }
    // The last known denylist still applies; a revocation made now applies here and says it is not shared yet.
    assert_revoked(&a.check_bearer(&erin).await);
    assert_revoked(&b.check_bearer(&erin).await);
    assert!(allowed(&b.check_bearer(&frank).await));
    let (status, _) = revoke(&a, json!({"kind": "sub", "value": "frank"})).await;
    assert_eq!(status, 503);
    assert_revoked(&a.check_bearer(&frank).await);
    // Redis calls are timed, and the failed ones counted, as an upstream of kind `redis` (the
    // revocation's write just failed; the outage itself may have been noticed on pub/sub, no call).
    let metrics = a.metrics().await;
    let sample = |series: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map_or(0.0, |v| v.parse().unwrap())
    };
    assert!(
        sample("portcullis_upstream_duration_seconds_count{kind=\"redis\",provider=\"\"}") >= 1.0,
        "{metrics}"
    );
    assert!(
        sample("portcullis_upstream_failures_total{kind=\"redis\",provider=\"\"}") >= 1.0,
        "{metrics}"
    );

    // Redis comes back empty: the revocations are written back and sharing resumes.
    redis.restart();
    denied_within(&b, &frank, Duration::from_secs(10)).await;
    for server in [&a, &b] {
        let mut body = String::new();
        for _ in 0..100 {
            body = readyz(server).await.1;
            if !body.contains("degraded") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(body, "ready\n");
    }
    assert_revoked(&b.check_bearer(&erin).await);
    assert!(allowed(&a.check_bearer(&grace).await));
    assert_eq!(
        revoke(&b, json!({"kind": "sub", "value": "grace"})).await.0,
        201
    );
    denied_within(&a, &grace, Duration::from_secs(1)).await;
}

/// Runs `portcullis revoke …` with `secret` in PORTCULLIS_ADMIN_SECRET; returns the exit code and stdout.
async fn revoke_cli(args: Vec<String>, secret: Option<&str>) -> (i32, String) {
    let secret = secret.map(str::to_owned);
    tokio::task::spawn_blocking(move || {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"));
        command
            .arg("revoke")
            .args(&args)
            .env_remove("PORTCULLIS_ADMIN_SECRET");
        if let Some(secret) = secret {
            command.env("PORTCULLIS_ADMIN_SECRET", secret);
        }
        let out = command.output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn the_revoke_command_uses_the_admin_api() {
    let idp = FakeIdp::start().await;
    let key = TestKey::rsa("k1");
    idp.set_keys(&[&key]);
    let server = server(&idp, "", Clock::system()).await;
    let alice = token(&key, &idp, "auth0|alice", now() - 60, json!({}));
    assert!(allowed(&server.check_bearer(&alice).await));
    let admin_url = format!("http://{}", server.admin);
    let args = |extra: &[&str]| {
        let mut args = vec!["--admin".to_owned(), admin_url.clone()];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };

    let (code, _) = revoke_cli(args(&["--sub", "auth0|alice"]), None).await;
    assert_ne!(code, 0, "no secret");
    let (code, _) = revoke_cli(args(&["--sub", "auth0|alice"]), Some("wrong")).await;
    assert_eq!(code, 1, "a wrong secret");
    assert!(allowed(&server.check_bearer(&alice).await));

    let (code, out) =
        revoke_cli(args(&["--sub", "auth0|alice", "--ttl", "120"]), Some(ADMIN)).await;
    assert_eq!(code, 0, "{out}");
    let entry: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (entry["kind"].as_str(), entry["value"].as_str()),
        (Some("sub"), Some("auth0|alice"))
    );
    assert_revoked(&server.check_bearer(&alice).await);

    let (code, out) = revoke_cli(args(&["--sub", "auth0|alice", "--undo"]), Some(ADMIN)).await;
    assert_eq!(code, 0, "{out}");
    assert!(allowed(&server.check_bearer(&alice).await));
}

#[tokio::test]
async fn a_revocation_applies_to_an_answer_from_the_introspection_cache() {
    let up = FakeUpstream::start().await;
    up.answer(
        "introspect:opaque-1",
        200,
        json!({"active": true, "sub": "alice", "jti": "op-1", "iat": now() - 60, "exp": now() + 600}),
    );
    let yaml = format!(
        "server: {{drain_seconds: 0}}
providers:
  - name: idp
    type: introspection
    endpoint: {}
    client_id: portcullis
    client_secret: {{env: ADMIN_SECRET}}
revocation:
  admin_secret: {{env: ADMIN_SECRET}}
",
        up.url("/introspect")
    );
    let server = TestServer::start_with(&yaml, secrets(), Clock::system())
        .await
        .ready()
        .await;
    assert!(allowed(&server.check_bearer("opaque-1").await));
    assert_eq!(up.hits(), 1);
    assert_eq!(
        revoke(&server, json!({"kind": "jti", "value": "op-1"}))
            .await
            .0,
        201
    );
    assert_revoked(&server.check_bearer("opaque-1").await);
    assert_eq!(up.hits(), 1, "the denial came from the cached answer");
}

/// Issue 28 finding 10: one unreadable event (a numeric `user_id`, no `log_id`) no longer makes the whole
/// batch a 400: the valid events in it apply, the others are counted and described.
#[tokio::test]
async fn an_odd_auth0_event_does_not_lose_the_rest_of_its_batch() {
    let idp = FakeIdp::start().await;
    let key = TestKey::rsa("k1");
    idp.set_keys(&[&key]);
    let server = server(&idp, "", Clock::system()).await;
    let before = now() - 60;
    let carol = token(&key, &idp, "auth0|carol", before, json!({}));
    assert!(allowed(&server.check_bearer(&carol).await));
    let body = json!([
        {"log_id": "1", "data": {"type": "slo", "user_id": 12345}},
        {"data": {"type": "slo", "user_id": "auth0|dave"}},
        {"log_id": "3", "data": {"type": "slo", "user_id": "auth0|carol"}},
        "not an event",
    ])
    .to_string();
    let (status, answer) = auth0_batch(&server, AUTH0, body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["revoked"], 1, "{answer}");
    assert_eq!(answer["malformed"], 3, "{answer}");
    let indices: Vec<&Value> = answer["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["index"])
        .collect();
    assert_eq!(indices, [&json!(0), &json!(1), &json!(3)]);
    assert_eq!(answer["problems"][0]["log_id"], "1");
    assert_revoked(&server.check_bearer(&carol).await);
    // Not an array at all is still a 400.
    let (status, _) = auth0_batch(&server, AUTH0, "{}".into()).await;
    assert_eq!(status, 400);
}
