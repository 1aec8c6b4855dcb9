//! The real server over real gRPC on 127.0.0.1:0, against a fake IdP on loopback.

use portcullis_test as common;

use std::time::Duration;

use common::*;
use portcullis::Clock;
use serde_json::json;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const AUD: &str = "https://api.example.com/";

fn config(idp: &FakeIdp, extra: &str) -> String {
    format!(
        "
server:
  drain_seconds: 0
providers:
  - name: test-idp
    type: jwt
    issuer: {iss}
    audiences: [{AUD}, other-api]
    algorithms: [RS256, ES256, EdDSA]
{extra}
",
        iss = idp.issuer
    )
}

/// Waits (at most 2 s) for a health status (1 SERVING, 2 NOT_SERVING).
async fn wait_health(
    health: &mut HealthClient<tonic::transport::Channel>,
    service: &str,
    want: i32,
) {
    let mut status = 0;
    for _ in 0..40 {
        status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        if status == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("health of `{service}` stayed {status}, expected {want}");
}

struct Setup {
    idp: FakeIdp,
    server: TestServer,
    rsa: TestKey,
    ec: TestKey,
    ed: TestKey,
}

async fn setup_with(extra: &str) -> Setup {
    let idp = FakeIdp::start().await;
    let (rsa, ec, ed) = (
        TestKey::rsa("rsa-1"),
        TestKey::ec("ec-1"),
        TestKey::ed("ed-1"),
    );
    idp.set_keys(&[&rsa, &ec, &ed]);
    let server = TestServer::start(&config(&idp, extra)).await.ready().await;
    Setup {
        idp,
        server,
        rsa,
        ec,
        ed,
    }
}

async fn setup() -> Setup {
    setup_with("").await
}

#[tokio::test]
async fn rs256_es256_and_eddsa_tokens_are_allowed_with_principal_headers() {
    let s = setup().await;
    for key in [&s.rsa, &s.ec, &s.ed] {
        let mut claims = claims(&s.idp.issuer, AUD);
        claims["sub"] = json!(format!("user-{}", key.kid()));
        let response = s.server.check_bearer(&key.token(&claims)).await;
        let allowed = ok(&response);
        let subject = format!("user-{}", key.kid());
        assert_eq!(
            header(&allowed.headers, "x-auth-subject"),
            Some(subject.as_str())
        );
        assert_eq!(
            header(&allowed.headers, "x-auth-issuer"),
            Some(s.idp.issuer.as_str())
        );
        assert_eq!(
            header(&allowed.headers, "x-auth-scopes"),
            Some("read:data write:data")
        );
        assert_eq!(
            header(&allowed.headers, "x-auth-provider"),
            Some("test-idp")
        );
        for h in &allowed.headers {
            assert_eq!(
                h.append_action, 2,
                "OVERWRITE_IF_EXISTS_OR_ADD on {:?}",
                h.header
            );
        }
        let metadata = response
            .dynamic_metadata
            .as_ref()
            .expect("dynamic metadata");
        assert!(metadata.fields.contains_key("subject"));
        // The claims only when asked for (`claims_in_metadata`).
        assert!(!metadata.fields.contains_key("claims"));
    }
    // Discovery found the key set (no jwks_uri configured).
    assert_eq!(s.idp.discovery_hits(), 1);
}

/// The metadata fields of an allow of `path`.
async fn metadata_keys(s: &Setup, path: &str) -> Vec<String> {
    let auth = format!("Bearer {}", s.rsa.token(&claims(&s.idp.issuer, AUD)));
    let response = s
        .server
        .send(request_to("GET", path, &[("authorization", &auth)]))
        .await;
    ok(&response);
    let metadata = response.dynamic_metadata.expect("dynamic metadata");
    metadata.fields.into_keys().collect()
}

#[tokio::test]
async fn claims_are_copied_into_the_metadata_only_where_asked() {
    let routes = "
routes:
  - {name: with, match: {path_prefix: /claims}, claims_in_metadata: true}
  - {name: without, match: {path_prefix: /without}, claims_in_metadata: false}
  - {name: inherits, match: {path_prefix: /inherits}}
";
    // Off by default; a route turns it on.
    let s = setup_with(routes).await;
    let with = metadata_keys(&s, "/claims").await;
    assert!(with.contains(&"claims".to_owned()), "{with:?}");
    for path in ["/without", "/inherits", "/other"] {
        let keys = metadata_keys(&s, path).await;
        assert!(!keys.contains(&"claims".to_owned()), "{path}: {keys:?}");
        for kept in [
            "subject",
            "provider",
            "route",
            "decision_id",
            "issuer",
            "scopes",
        ] {
            assert!(
                keys.contains(&kept.to_owned()),
                "{path}: {kept} in {keys:?}"
            );
        }
    }

    // `answers.claims_in_metadata` turns it on for every route that does not say otherwise.
    let s = setup_with(&format!("answers: {{claims_in_metadata: true}}{routes}")).await;
    for (path, claims) in [
        ("/with", true),
        ("/without", false),
        ("/inherits", true),
        ("/other", true),
    ] {
        let keys = metadata_keys(&s, path).await;
        assert_eq!(
            keys.contains(&"claims".to_owned()),
            claims,
            "{path}: {keys:?}"
        );
    }
}

#[tokio::test]
async fn audience_may_be_an_array_and_scp_an_array() {
    let s = setup().await;
    let mut claims = claims(&s.idp.issuer, AUD);
    claims["aud"] = json!(["https://unrelated/", "other-api"]);
    claims.as_object_mut().unwrap().remove("scope");
    claims["scp"] = json!(["a", "b"]);
    let response = s.server.check_bearer(&s.rsa.token(&claims)).await;
    assert_eq!(header(&ok(&response).headers, "x-auth-scopes"), Some("a b"));
}

#[tokio::test]
async fn invalid_tokens_are_denied_with_401_invalid_token() {
    let s = setup().await;
    let iss = s.idp.issuer.clone();
    let now = now();
    let base = || claims(&iss, AUD);

    let mut expired = base();
    expired["exp"] = json!(now - 120);
    let mut not_yet = base();
    not_yet["nbf"] = json!(now + 600);
    let mut future_iat = base();
    future_iat["iat"] = json!(now + 600);
    let mut wrong_iss = base();
    wrong_iss["iss"] = json!("https://evil.example/");
    let mut wrong_aud = base();
    wrong_aud["aud"] = json!("https://someone-else/");
    let mut no_exp = base();
    no_exp.as_object_mut().unwrap().remove("exp");
    let mut string_exp = base();
    string_exp["exp"] = json!((now + 600).to_string());

    let good = s.rsa.token(&base());
    let (head, _) = good.rsplit_once('.').unwrap();
    let bad_signature = format!("{head}.{}", b64(vec![7u8; 256]));
    let other_key = TestKey::rsa("rsa-1"); // same kid, different key
    let forged = other_key.token(&base());
    let alg_none = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "kid": "rsa-1"}).to_string()),
        b64(base().to_string())
    );
    // The classic confusion attack: HS256 keyed with the RSA public key.
    let hs_with_public_key = hs256_token(
        &s.rsa.public_bytes(),
        &json!({"alg": "HS256", "kid": "rsa-1"}),
        &base(),
    );
    let unknown_kid = TestKey::ec("never-published").token(&base());
    let crit = s.rsa.token_with_header(
        &json!({"alg": "RS256", "kid": "rsa-1", "crit": ["http://example.com/ext"], "http://example.com/ext": true}),
        &base(),
    );
    let mut huge = base();
    huge["padding"] = json!("x".repeat(9000));
    let oversized = s.rsa.token(&huge);

    let cases: Vec<(&str, String, &str, &str)> = vec![
        ("expired", s.rsa.token(&expired), "expired", "expired"),
        (
            "not yet valid",
            s.rsa.token(&not_yet),
            "not valid yet",
            "not_yet_valid",
        ),
        (
            "iat in the future",
            s.rsa.token(&future_iat),
            "issued in the future",
            "iat_in_future",
        ),
        (
            "wrong iss",
            s.rsa.token(&wrong_iss),
            "issuer is not trusted",
            "untrusted_iss",
        ),
        (
            "wrong aud",
            s.rsa.token(&wrong_aud),
            "audience",
            "wrong_aud",
        ),
        ("no exp", s.rsa.token(&no_exp), "no expiry", "missing_exp"),
        (
            "string exp",
            s.rsa.token(&string_exp),
            "malformed time claim",
            "malformed_time_claim",
        ),
        (
            "bad signature",
            bad_signature,
            "signature is invalid",
            "bad_signature",
        ),
        (
            "forged with another key",
            forged,
            "signature is invalid",
            "bad_signature",
        ),
        ("alg none", alg_none, "unsigned", "alg_none"),
        (
            "HS256 with the RSA public key",
            hs_with_public_key,
            "algorithm is not allowed",
            "alg_not_allowed",
        ),
        ("unknown kid", unknown_kid, "unknown key", "unknown_kid"),
        ("unknown crit", crit, "critical header", "unsupported_crit"),
        ("oversized", oversized, "too large", "token_too_large"),
        (
            "garbage",
            "aaa.bbb.ccc".to_owned(),
            "malformed",
            "malformed_token",
        ),
        (
            "opaque",
            "opaque-token-123".to_owned(),
            "not a JWT",
            "not_a_jwt",
        ),
    ];
    for (name, token, needle, reason) in cases {
        let response = s.server.check_bearer(&token).await;
        let label = assert_invalid_token(&response, needle);
        assert_eq!(label, reason, "{name}");
        // Neither the token nor any part of it is echoed back.
        let d = denied(&response);
        let signature = token.rsplit('.').next().unwrap_or("");
        if signature.len() > 8 {
            assert!(!d.body.contains(signature), "{name}: token echoed in body");
        }
    }
}

#[tokio::test]
async fn missing_token_gets_a_plain_challenge() {
    let s = setup().await;
    let response = s.server.check(&[]).await;
    let d = denied(&response);
    assert_eq!(d.status.as_ref().unwrap().code, 401);
    assert_eq!(
        header(&d.headers, "www-authenticate"),
        Some("Bearer realm=\"portcullis\"")
    );
    let body: serde_json::Value = serde_json::from_str(&d.body).unwrap();
    assert_eq!(body["error_description"], "authentication required");
    // Another scheme is not a bearer credential either.
    let basic = s
        .server
        .check(&[("authorization", "Basic dXNlcjpwYXNz")])
        .await;
    assert_eq!(
        header(&denied(&basic).headers, "www-authenticate"),
        Some("Bearer realm=\"portcullis\"")
    );
}

#[tokio::test]
async fn two_bearer_credentials_are_a_bad_request() {
    let s = setup().await;
    let token = s.rsa.token(&claims(&s.idp.issuer, AUD));
    let auth = format!("Bearer {token}");
    // Envoy joins two Authorization headers with ",".
    let response = s
        .server
        .check(&[("authorization", &auth), ("authorization", &auth)])
        .await;
    let d = denied(&response);
    assert_eq!(d.status.as_ref().unwrap().code, 400);
    assert_eq!(response.status.as_ref().unwrap().code, 3);
    assert!(header(&d.headers, "www-authenticate")
        .unwrap()
        .contains("error=\"invalid_request\""));
}

#[tokio::test]
async fn spoofed_identity_headers_are_removed_or_overwritten() {
    let s = setup().await;
    let token = s.rsa.token(&claims(&s.idp.issuer, AUD));
    let auth = format!("Bearer {token}");
    let response = s
        .server
        .check(&[
            ("authorization", &auth),
            ("x-auth-subject", "mallory"),
            ("x-auth-subject", "mallory2"),
            ("X-Auth-Role", "admin"),
            ("x-auth-email", "ceo@example.com"),
            ("x-other", "kept"),
        ])
        .await;
    let allowed = ok(&response);
    assert_eq!(header(&allowed.headers, "x-auth-subject"), Some("user-1"));
    let mut removed = allowed.headers_to_remove.clone();
    removed.sort();
    assert_eq!(removed, vec!["x-auth-email", "x-auth-role"]);
    assert!(
        !allowed
            .headers_to_remove
            .iter()
            .any(|h| h == "x-auth-subject"),
        "a header we set is never also removed"
    );
    assert!(!allowed
        .headers_to_remove
        .iter()
        .any(|h| h == "authorization"));
}

#[tokio::test]
async fn claim_headers_and_authorization_removal() {
    let s = setup_with(
        "    claim_headers: {email: x-auth-email, groups: x-auth-groups, level: x-auth-level, admin: x-auth-admin}
headers:
  remove_authorization: true",
    )
    .await;
    let mut claims = claims(&s.idp.issuer, AUD);
    claims["email"] = json!("a@example.com");
    claims["groups"] = json!(["eng", "ops"]);
    claims["level"] = json!(3);
    claims["admin"] = json!(false);
    let response = s.server.check_bearer(&s.ec.token(&claims)).await;
    let allowed = ok(&response);
    assert_eq!(
        header(&allowed.headers, "x-auth-email"),
        Some("a@example.com")
    );
    assert_eq!(header(&allowed.headers, "x-auth-groups"), Some("eng,ops"));
    assert_eq!(header(&allowed.headers, "x-auth-level"), Some("3"));
    assert_eq!(header(&allowed.headers, "x-auth-admin"), Some("false"));
    assert_eq!(allowed.headers_to_remove, vec!["authorization"]);
}

#[tokio::test]
async fn rotated_key_is_picked_up_with_one_fetch_under_concurrency() {
    let s = setup().await;
    let fetches_before = s.idp.jwks_hits();
    let rotated = TestKey::ec("ec-2");
    s.idp.set_keys(&[&s.rsa, &rotated]);
    let token = rotated.token(&claims(&s.idp.issuer, AUD));
    let auth = format!("Bearer {token}");

    let mut tasks = Vec::new();
    for _ in 0..200 {
        let client = s.server.client().await;
        let req = request(&[("authorization", &auth)]);
        tasks.push(tokio::spawn(async move {
            let mut client = client;
            client.check(req).await.unwrap().into_inner()
        }));
    }
    for task in tasks {
        let response = task.await.unwrap();
        ok(&response);
    }
    assert_eq!(
        s.idp.jwks_hits() - fetches_before,
        1,
        "single flight: one fetch"
    );

    // Within the cooldown another unknown kid does not fetch again.
    let stranger = TestKey::ec("ec-3").token(&claims(&s.idp.issuer, AUD));
    assert_invalid_token(&s.server.check_bearer(&stranger).await, "unknown key");
    assert_eq!(s.idp.jwks_hits() - fetches_before, 1, "cooldown holds");
}

/// A counter's value in the `/metrics` text (0 when absent).
fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn known_keys_keep_working_while_the_idp_is_down() {
    let mut s = setup_with(
        "    jwks: {refresh_seconds: 1, min_refresh_seconds: 1, max_refresh_seconds: 1}",
    )
    .await;
    s.idp.stop();
    // Wait (at most 10 s) until a background refresh has failed.
    let failed = "portcullis_jwks_fetches_total{provider=\"test-idp\",result=\"failed\"}";
    let mut refreshes_failed = 0;
    for _ in 0..100 {
        refreshes_failed = metric(&s.server.metrics().await, failed);
        if refreshes_failed > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        refreshes_failed > 0,
        "a refresh failed while the IdP was down"
    );
    let token = s.ed.token(&claims(&s.idp.issuer, AUD));
    ok(&s.server.check_bearer(&token).await);
    assert!(
        s.server.app.ready(),
        "a failed refresh keeps the last good keys"
    );
}

#[tokio::test]
async fn a_failing_refresh_keeps_the_last_good_keys() {
    let s = setup_with(
        "    jwks: {refresh_seconds: 1, min_refresh_seconds: 1, max_refresh_seconds: 1}",
    )
    .await;
    s.idp.set_mode(IdpMode::Garbage);
    let hits = s.idp.jwks_hits();
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert!(s.idp.jwks_hits() > hits, "refresh was attempted");
    ok(&s
        .server
        .check_bearer(&s.rsa.token(&claims(&s.idp.issuer, AUD)))
        .await);
    s.idp.set_mode(IdpMode::Fail500);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    ok(&s
        .server
        .check_bearer(&s.rsa.token(&claims(&s.idp.issuer, AUD)))
        .await);
}

#[tokio::test]
async fn no_keys_ever_loaded_is_an_error_answer_never_an_allow() {
    let idp = FakeIdp::start().await;
    let key = TestKey::rsa("k");
    idp.set_keys(&[&key]);
    idp.set_mode(IdpMode::Fail500);
    let server = TestServer::start(&config(&idp, "")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!server.app.ready());

    // Health says NOT_SERVING.
    let mut health = HealthClient::new(
        tonic::transport::Channel::from_shared(format!("http://{}", server.grpc))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    let status = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, 2, "NOT_SERVING");
    wait_health(&mut health, "liveness", 1).await;
    let readyz = reqwest::get(format!("http://{}/readyz", server.admin))
        .await
        .unwrap();
    assert_eq!(readyz.status(), 503);

    let response = server
        .check_bearer(&key.token(&claims(&idp.issuer, AUD)))
        .await;
    assert_eq!(response.status.as_ref().unwrap().code, 14, "UNAVAILABLE");
    match &response.http_response {
        Some(portcullis::pb::auth::check_response::HttpResponse::ErrorResponse(e)) => {
            assert_eq!(e.status.as_ref().unwrap().code, 503);
            assert!(
                !e.body.contains("127.0.0.1"),
                "no internal detail in the answer"
            );
        }
        other => panic!("expected error_response, got {other:?}"),
    }

    // Once the IdP recovers, the background loader gets the keys and health turns SERVING.
    idp.set_mode(IdpMode::Normal);
    let server = server.ready().await;
    wait_health(&mut health, "envoy.service.auth.v3.Authorization", 1).await;
    ok(&server
        .check_bearer(&key.token(&claims(&idp.issuer, AUD)))
        .await);
}

#[tokio::test]
async fn jku_and_embedded_jwk_headers_never_supply_keys() {
    let s = setup().await;
    let attacker_idp = FakeIdp::start().await;
    let attacker = TestKey::rsa("attacker");
    attacker_idp.set_keys(&[&attacker]);
    let header = json!({
        "alg": "RS256", "kid": "attacker",
        "jku": attacker_idp.jwks_uri(),
        "jwk": attacker.jwk(),
    });
    let token = attacker.token_with_header(&header, &claims(&s.idp.issuer, AUD));
    assert_invalid_token(&s.server.check_bearer(&token).await, "unknown key");
    assert_eq!(attacker_idp.jwks_hits(), 0, "the jku URL is never fetched");
}

#[tokio::test]
async fn required_typ_refuses_id_tokens() {
    let s = setup_with("    required_typ: at+jwt").await;
    let claims = claims(&s.idp.issuer, AUD);
    ok(&s.server.check_bearer(&s.rsa.token(&claims)).await);
    let id_token = s.rsa.token_with_header(
        &json!({"alg": "RS256", "kid": "rsa-1", "typ": "JWT"}),
        &claims,
    );
    assert_invalid_token(&s.server.check_bearer(&id_token).await, "wrong type");
    let media_type = s.rsa.token_with_header(
        &json!({"alg": "RS256", "kid": "rsa-1", "typ": "application/at+jwt"}),
        &claims,
    );
    ok(&s.server.check_bearer(&media_type).await);
}

#[tokio::test]
async fn algorithm_allow_list_pins_what_a_key_may_verify() {
    let idp = FakeIdp::start().await;
    let (rsa, ec) = (TestKey::rsa("rsa-1"), TestKey::ec("ec-1"));
    idp.set_keys(&[&rsa, &ec]);
    // Only RS256: the EC key is unusable, so its tokens fail even though the IdP publishes it.
    let yaml = format!(
        "providers:\n  - {{name: p, type: jwt, issuer: '{}', audiences: ['{AUD}'], jwks_uri: '{}'}}",
        idp.issuer,
        idp.jwks_uri()
    );
    let server = TestServer::start(&yaml).await.ready().await;
    ok(&server
        .check_bearer(&rsa.token(&claims(&idp.issuer, AUD)))
        .await);
    assert_invalid_token(
        &server
            .check_bearer(&ec.token(&claims(&idp.issuer, AUD)))
            .await,
        "algorithm is not allowed",
    );
    assert_eq!(idp.discovery_hits(), 0, "jwks_uri given: no discovery");
}

#[tokio::test]
async fn several_issuers_pick_their_provider_by_iss() {
    let (a, b) = (FakeIdp::start().await, FakeIdp::start().await);
    let (ka, kb) = (TestKey::ec("a"), TestKey::ec("b"));
    a.set_keys(&[&ka]);
    b.set_keys(&[&kb]);
    let yaml = format!(
        "providers:
  - {{name: idp-a, type: jwt, issuer: '{}', audiences: [api-a], algorithms: [ES256]}}
  - {{name: idp-b, type: jwt, issuer: '{}', audiences: [api-b], algorithms: [ES256]}}",
        a.issuer, b.issuer
    );
    let server = TestServer::start(&yaml).await.ready().await;
    let ra = server
        .check_bearer(&ka.token(&claims(&a.issuer, "api-a")))
        .await;
    assert_eq!(header(&ok(&ra).headers, "x-auth-provider"), Some("idp-a"));
    let rb = server
        .check_bearer(&kb.token(&claims(&b.issuer, "api-b")))
        .await;
    assert_eq!(header(&ok(&rb).headers, "x-auth-provider"), Some("idp-b"));
    // B's key claiming A's issuer: A's key set has no kid "b".
    assert_invalid_token(
        &server
            .check_bearer(&kb.token(&claims(&a.issuer, "api-a")))
            .await,
        "unknown key",
    );
    // A's token for B's audience.
    assert_invalid_token(
        &server
            .check_bearer(&ka.token(&claims(&a.issuer, "api-b")))
            .await,
        "audience",
    );
}

#[tokio::test]
async fn hs256_needs_an_explicit_shared_secret() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret");
    std::fs::write(&path, "a-long-random-shared-secret-for-tests\n").unwrap();
    let yaml = format!(
        "providers:
  - name: legacy
    type: jwt
    issuer: legacy-issuer
    audiences: [api]
    algorithms: [HS256]
    shared_secret: {{file: '{}'}}",
        path.display()
    );
    let server = TestServer::start(&yaml).await.ready().await;
    let claims = claims("legacy-issuer", "api");
    let good = hs256_token(
        b"a-long-random-shared-secret-for-tests",
        &json!({"alg": "HS256"}),
        &claims,
    );
    ok(&server.check_bearer(&good).await);
    let bad = hs256_token(b"another-secret", &json!({"alg": "HS256"}), &claims);
    assert_invalid_token(&server.check_bearer(&bad).await, "signature is invalid");
    let hs512 = hs256_token(b"x", &json!({"alg": "HS512"}), &claims);
    assert_invalid_token(
        &server.check_bearer(&hs512).await,
        "algorithm is not allowed",
    );
}

#[tokio::test]
async fn health_turns_not_serving_while_draining() {
    let idp = FakeIdp::start().await;
    let key = TestKey::ec("k");
    idp.set_keys(&[&key]);
    let yaml = config(&idp, "").replace("drain_seconds: 0", "drain_seconds: 1");
    let mut server = TestServer::start(&yaml).await.ready().await;
    let mut health = HealthClient::new(
        tonic::transport::Channel::from_shared(format!("http://{}", server.grpc))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    let serving = || HealthCheckRequest {
        service: String::new(),
    };
    wait_health(&mut health, "", 1).await;

    let task = server.begin_shutdown();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Draining: still answering, but NOT_SERVING and not ready.
    assert_eq!(
        health.check(serving()).await.unwrap().into_inner().status,
        2
    );
    let readyz = reqwest::get(format!("http://{}/readyz", server.admin))
        .await
        .unwrap();
    assert_eq!(readyz.status(), 503);
    ok(&server
        .check_bearer(&key.token(&claims(&idp.issuer, AUD)))
        .await);
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn admin_endpoints_report_liveness_and_metrics() {
    let s = setup().await;
    let _ = s.server.check(&[]).await;
    ok(&s
        .server
        .check_bearer(&s.rsa.token(&claims(&s.idp.issuer, AUD)))
        .await);
    let base = format!("http://{}", s.server.admin);
    assert_eq!(
        reqwest::get(format!("{base}/healthz"))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        reqwest::get(format!("{base}/readyz"))
            .await
            .unwrap()
            .status(),
        200
    );
    let metrics = s.server.metrics().await;
    assert!(
        metrics.contains("portcullis_checks_total{decision=\"allow\",reason=\"\",route=\"default\",provider=\"test-idp\",transport=\"grpc\"} 1"),
        "{metrics}"
    );
    assert!(metrics
        .contains("portcullis_checks_total{decision=\"deny\",reason=\"missing_credential\",route=\"default\",provider=\"\",transport=\"grpc\"} 1"));
    assert!(
        metrics.contains("portcullis_jwks_fetches_total{provider=\"test-idp\",result=\"ok\"} 1")
    );
    assert!(metrics.contains("portcullis_ready 1"));
    assert_eq!(
        reqwest::get(format!("{base}/dev/jwks.json"))
            .await
            .unwrap()
            .status(),
        404
    );
}

#[tokio::test]
async fn raw_header_maps_are_read_too() {
    use portcullis::pb::core::{HeaderMap, HeaderValue};
    let s = setup().await;
    let token = s.rsa.token(&claims(&s.idp.issuer, AUD));
    let mut req = request(&[]);
    let http = req
        .attributes
        .as_mut()
        .unwrap()
        .request
        .as_mut()
        .unwrap()
        .http
        .as_mut()
        .unwrap();
    let hv = |k: &str, v: &str| HeaderValue {
        key: k.into(),
        value: String::new(),
        raw_value: v.as_bytes().to_vec(),
    };
    http.header_map = Some(HeaderMap {
        headers: vec![
            hv("authorization", &format!("Bearer {token}")),
            hv("x-auth-subject", "mallory"),
            hv("x-auth-tenant", "a"),
            hv("x-auth-tenant", "b"),
        ],
    });
    let response = s.server.send(req).await;
    let allowed = ok(&response);
    assert_eq!(header(&allowed.headers, "x-auth-subject"), Some("user-1"));
    assert_eq!(allowed.headers_to_remove, vec!["x-auth-tenant"]);
}

#[tokio::test]
async fn cached_tokens_never_outlive_their_exp() {
    let idp = FakeIdp::start().await;
    let key = TestKey::ec("k");
    idp.set_keys(&[&key]);
    let start = now();
    let clock = Clock::manual(start);
    let server = TestServer::start_with(
        &config(&idp, ""),
        portcullis::io::sources_with(Default::default()),
        clock.clone(),
    )
    .await
    .ready()
    .await;
    let mut short = claims(&idp.issuer, AUD);
    short["exp"] = json!(start + 100);
    let token = key.token(&short);
    ok(&server.check_bearer(&token).await);
    ok(&server.check_bearer(&token).await);
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("\nportcullis_token_cache_entries 1\n"),
        "verified once, then cached: {metrics}"
    );

    // Past exp (and the leeway) the cached entry is not used: the token is re-checked and refused.
    clock.set(start + 100 + 31);
    assert_invalid_token(&server.check_bearer(&token).await, "expired");
}

#[tokio::test]
async fn a_local_jwks_file_needs_no_fetch() {
    let key = TestKey::ed("file-key");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, json!({"keys": [key.jwk()]}).to_string()).unwrap();
    let yaml = format!(
        "providers:\n  - {{name: pinned, type: jwt, issuer: offline-issuer, audiences: [api], algorithms: [EdDSA], jwks_file: '{}'}}",
        path.display()
    );
    let server = TestServer::start(&yaml).await.ready().await;
    ok(&server
        .check_bearer(&key.token(&claims("offline-issuer", "api")))
        .await);
    assert_invalid_token(
        &server
            .check_bearer(&TestKey::ed("other").token(&claims("offline-issuer", "api")))
            .await,
        "unknown key",
    );
}

#[tokio::test]
async fn grpc_reflection_lists_the_services() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let s = setup().await;
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{}", s.server.grpc)).unwrap();
    let mut client = ServerReflectionClient::new(channel.connect().await.unwrap());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("expected a service list: {answer:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"envoy.service.auth.v3.Authorization".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_owned()),
        "{names:?}"
    );
}

/// Waits (at most 5 s of real time) until the IdP has served `count` key set fetches in all.
async fn wait_for_fetches(idp: &FakeIdp, count: usize) {
    for _ in 0..250 {
        if idp.jwks_hits() >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "expected {count} key set fetches, the IdP saw {}",
        idp.jwks_hits()
    );
}

/// The refresh schedule runs on the injectable clock: each step moves it, nothing waits on wall time
/// except the short grace that shows a fetch did *not* happen.
#[tokio::test]
async fn cache_control_max_age_sets_the_refresh_within_bounds() {
    let idp = FakeIdp::start().await;
    let key = TestKey::ec("k");
    idp.set_keys(&[&key]);
    // The IdP asks for a refresh after 1 s, but the minimum bound is 20 s.
    idp.set_cache_control(Some("public, max-age=1"));
    let start = now();
    let clock = Clock::manual(start);
    let server = TestServer::start_with(
        &config(
            &idp,
            "    jwks: {refresh_seconds: 60, min_refresh_seconds: 20, max_refresh_seconds: 100}",
        ),
        portcullis::io::sources_with(Default::default()),
        clock.clone(),
    )
    .await
    .ready()
    .await;
    let grace = || tokio::time::sleep(Duration::from_millis(300));
    assert_eq!(idp.jwks_hits(), 1, "the first load");

    // max-age=1 is raised to the 20 s floor: nothing at +19, a fetch at +20.
    clock.set(start + 19);
    grace().await;
    assert_eq!(
        idp.jwks_hits(),
        1,
        "max-age below the floor waits for the floor"
    );
    clock.set(start + 20);
    wait_for_fetches(&idp, 2).await;

    // max-age=100000 is capped at the 100 s ceiling.
    idp.set_cache_control(Some("max-age=100000"));
    clock.set(start + 40);
    wait_for_fetches(&idp, 3).await; // the fetch that reads the new max-age
    clock.set(start + 139);
    grace().await;
    assert_eq!(idp.jwks_hits(), 3, "nothing before the ceiling");
    clock.set(start + 140);
    wait_for_fetches(&idp, 4).await;

    // Without max-age the configured refresh (60 s) applies.
    idp.set_cache_control(None);
    clock.set(start + 240);
    wait_for_fetches(&idp, 5).await; // reads "no max-age"
    clock.set(start + 299);
    grace().await;
    assert_eq!(
        idp.jwks_hits(),
        5,
        "refresh_seconds applies when the IdP gives no max-age"
    );
    clock.set(start + 300);
    wait_for_fetches(&idp, 6).await;
    drop(server);
}
