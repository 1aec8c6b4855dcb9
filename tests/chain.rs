//! The provider chain over real gRPC: introspection, webhook, GitHub, API keys, mTLS, Envoy-verified
//! payloads and anonymous access, against fake upstreams on loopback with hit counters.

use portcullis_test as common;

use std::time::Duration;

use common::upstream::{FakeUpstream, Mode};
use common::*;
use portcullis::pb::auth::check_response::HttpResponse;
use portcullis::pb::auth::CheckResponse;
use serde_json::{json, Value};

fn error_answer(response: &CheckResponse) {
    assert_eq!(
        response.status.as_ref().unwrap().code,
        14,
        "UNAVAILABLE: {response:?}"
    );
    match &response.http_response {
        Some(HttpResponse::ErrorResponse(e)) => {
            assert_eq!(e.status.as_ref().unwrap().code, 503);
            assert!(
                !e.body.contains("127.0.0.1"),
                "no upstream detail in the answer: {}",
                e.body
            );
        }
        other => panic!("expected error_response, got {other:?}"),
    }
}

fn body(response: &CheckResponse) -> Value {
    serde_json::from_str(&denied(response).body).unwrap()
}

fn introspection_yaml(up: &FakeUpstream, extra: &str) -> String {
    format!(
        "server: {{drain_seconds: 0}}
providers:
  - name: idp
    type: introspection
    endpoint: {}
    client_id: portcullis
    client_secret: {{env: INTROSPECTION_SECRET}}
    upstream: {{timeout_seconds: 1}}
{extra}",
        up.url("/introspect")
    )
}

async fn introspection_server(up: &FakeUpstream, extra: &str) -> TestServer {
    let secrets = portcullis::io::sources_with(
        [("INTROSPECTION_SECRET".to_owned(), "s3cret:&x".to_owned())].into(),
    );
    TestServer::start_with(
        &introspection_yaml(up, extra),
        secrets,
        portcullis::Clock::system(),
    )
    .await
    .ready()
    .await
}

#[tokio::test]
async fn introspection_active_tokens_are_cached_and_single_flight() {
    let up = FakeUpstream::start().await;
    up.answer(
        "introspect:opaque-1",
        200,
        json!({"active": true, "sub": "alice", "client_id": "web", "scope": "read:data", "exp": now() + 600}),
    );
    let server = introspection_server(&up, "").await;
    let allowed = server.check_bearer("opaque-1").await;
    let first = ok(&allowed);
    assert_eq!(header(&first.headers, "x-auth-subject"), Some("alice"));
    assert_eq!(header(&first.headers, "x-auth-scopes"), Some("read:data"));
    assert_eq!(header(&first.headers, "x-auth-provider"), Some("idp"));
    assert_eq!(up.hits(), 1);
    ok_check(&server, "opaque-1").await;
    assert_eq!(up.hits(), 1, "the second check makes no upstream call");

    // The client authenticated with HTTP Basic (RFC 6749 §2.3.1 form-encoding of id and secret).
    let sent = &up.captured()[0];
    use base64::Engine as _;
    let expected = base64::engine::general_purpose::STANDARD.encode("portcullis:s3cret%3A%26x");
    assert_eq!(sent.headers["authorization"], format!("Basic {expected}"));
    assert!(
        sent.body.contains("token_type_hint=access_token"),
        "{}",
        sent.body
    );

    // 100 concurrent checks of one new token: one upstream call.
    up.answer(
        "introspect:opaque-2",
        200,
        json!({"active": true, "sub": "bob", "exp": now() + 600}),
    );
    let auth = "Bearer opaque-2".to_owned();
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let mut client = server.client().await;
        let req = request(&[("authorization", &auth)]);
        tasks.push(tokio::spawn(async move {
            client.check(req).await.unwrap().into_inner()
        }));
    }
    for task in tasks {
        ok(&task.await.unwrap());
    }
    assert_eq!(
        up.hits(),
        2,
        "single flight: one call for 100 concurrent checks"
    );
}

async fn ok_check(server: &TestServer, token: &str) {
    ok(&server.check_bearer(token).await);
}

#[tokio::test]
async fn introspection_inactive_tokens_are_401_and_negatively_cached() {
    let up = FakeUpstream::start().await;
    let server = introspection_server(
        &up,
        "    deny_message: provide a token from the company IdP",
    )
    .await;
    let response = server.check_bearer("dead-token").await;
    assert_invalid_token(&response, "not active");
    assert_eq!(
        body(&response)["message"],
        "provide a token from the company IdP"
    );
    assert_invalid_token(&server.check_bearer("dead-token").await, "not active");
    assert_eq!(up.hits(), 1, "inactive answers are cached briefly");

    // An active token whose exp has passed is refused too.
    up.answer(
        "introspect:old",
        200,
        json!({"active": true, "sub": "x", "exp": now() - 10}),
    );
    assert_invalid_token(&server.check_bearer("old").await, "expired");
}

#[tokio::test]
async fn introspection_failures_are_error_answers_never_allows() {
    let up = FakeUpstream::start().await;
    up.answer("introspect:t", 200, json!({"active": true, "sub": "alice"}));
    let server = introspection_server(&up, "").await;
    for (mode, token) in [
        (Mode::Fail500, "t1"),
        (Mode::Garbage, "t2"),
        (Mode::Huge, "t3"),
        (Mode::Slow(Duration::from_millis(1500)), "t4"),
    ] {
        up.set_mode(mode);
        error_answer(&server.check_bearer(token).await);
    }
    // Failures are not cached: once the upstream recovers, the same token is asked again.
    up.set_mode(Mode::Normal);
    up.answer(
        "introspect:t1",
        200,
        json!({"active": true, "sub": "alice"}),
    );
    ok_check(&server, "t1").await;
}

#[tokio::test]
async fn introspection_client_secret_post_and_audience() {
    let up = FakeUpstream::start().await;
    up.answer(
        "introspect:a",
        200,
        json!({"active": true, "sub": "s", "aud": ["api", "x"]}),
    );
    up.answer(
        "introspect:b",
        200,
        json!({"active": true, "sub": "s", "aud": "other"}),
    );
    let server = introspection_server(
        &up,
        "    auth_method: client_secret_post\n    audiences: [api]",
    )
    .await;
    ok_check(&server, "a").await;
    assert_invalid_token(&server.check_bearer("b").await, "audience");
    let sent = &up.captured()[0];
    assert!(!sent.headers.contains_key("authorization"));
    assert!(sent.body.contains("client_id=portcullis"), "{}", sent.body);
    assert!(
        sent.body.contains("client_secret=s3cret%3A%26x"),
        "{}",
        sent.body
    );
}

#[tokio::test]
async fn webhook_in_llama_stack_format() {
    let up = FakeUpstream::start().await;
    up.answer(
        "webhook:key-1",
        200,
        json!({"principal": "team-a", "attributes": {"roles": ["admin", "dev"], "teams": ["a"]}, "message": "ok"}),
    );
    let yaml = format!(
        "providers:\n  - {{name: custom, type: webhook, endpoint: '{}', cache_ttl_seconds: 60}}",
        up.url("/webhook")
    );
    let server = TestServer::start(&yaml).await.ready().await;
    let mut req = request(&[
        ("authorization", "Bearer key-1"),
        ("cookie", "session=secret"),
        ("x-trace", "abc"),
    ]);
    http_of(&mut req).path = "/v1/models?limit=5&tag=a&tag=b".into();
    let response = server.send(req.clone()).await;
    let allowed = ok(&response);
    assert_eq!(header(&allowed.headers, "x-auth-subject"), Some("team-a"));
    assert_eq!(header(&allowed.headers, "x-auth-roles"), Some("admin,dev"));

    let sent: Value = serde_json::from_str(&up.captured()[0].body).unwrap();
    assert_eq!(sent["api_key"], "key-1");
    assert_eq!(sent["request"]["path"], "/v1/models");
    assert_eq!(sent["request"]["params"]["tag"], json!(["a", "b"]));
    assert_eq!(sent["request"]["headers"]["x-trace"], "abc");
    assert!(sent["request"]["headers"].get("authorization").is_none());
    assert!(sent["request"]["headers"].get("cookie").is_none());

    server.client().await.check(req).await.unwrap();
    assert_eq!(up.hits(), 1, "cached for cache_ttl_seconds");

    // Another status refuses; a 5xx is unavailable.
    assert_invalid_token(&server.check_bearer("key-2").await, "rejected");
    up.set_mode(Mode::Fail500);
    error_answer(&server.check_bearer("key-3").await);
}

#[tokio::test]
async fn github_tokens_with_organisations() {
    let up = FakeUpstream::start().await;
    up.answer(
        "user:gho_good",
        200,
        json!({"login": "octocat", "id": 1, "name": "Mona"}),
    );
    up.answer("orgs:gho_good", 200, json!([{"login": "portcullis-dev"}]));
    up.answer(
        "user:gho_outsider",
        200,
        json!({"login": "stranger", "id": 2}),
    );
    up.answer("orgs:gho_outsider", 200, json!([{"login": "elsewhere"}]));
    let yaml = format!(
        "providers:
  - name: github
    type: github
    api_base: '{}'
    allowed_orgs: [portcullis-dev]
    deny_message: provide a GitHub token in the Authorization header",
        up.url("")
    );
    let server = TestServer::start(&yaml).await.ready().await;
    let response = server.check_bearer("gho_good").await;
    let allowed = ok(&response);
    assert_eq!(header(&allowed.headers, "x-auth-subject"), Some("octocat"));
    assert_eq!(
        header(&allowed.headers, "x-auth-orgs"),
        Some("portcullis-dev")
    );
    assert_eq!(header(&allowed.headers, "x-auth-id"), Some("1"));
    let hits = up.hits();
    ok_check(&server, "gho_good").await;
    assert_eq!(up.hits(), hits, "cached by token digest");

    assert_invalid_token(&server.check_bearer("gho_outsider").await, "organization");
    let bad = server.check_bearer("gho_bad").await;
    assert_invalid_token(&bad, "rejected");
    assert_eq!(
        body(&bad)["message"],
        "provide a GitHub token in the Authorization header"
    );
    let none = server.check(&[]).await;
    assert_eq!(
        body(&none)["message"],
        "provide a GitHub token in the Authorization header"
    );
}

#[tokio::test]
async fn api_keys_by_digest_from_config_and_a_reloaded_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.yaml");
    let hash = portcullis::hash_key;
    std::fs::write(
        &file,
        format!(
            "- {{sha256: '{}', principal: file-bot}}\n",
            hash("file-key-1")
        ),
    )
    .unwrap();
    let yaml = format!(
        "providers:
  - name: keys
    type: api_key
    credential: {{header: x-api-key}}
    keys:
      - {{sha256: '{}', principal: ci, attributes: {{scopes: 'read:data write:data'}}}}
    keys_file: '{}'
    reload_seconds: 1",
        hash("config-key-1"),
        file.display()
    );
    let server = TestServer::start(&yaml).await.ready().await;
    let allowed = server.check(&[("x-api-key", "config-key-1")]).await;
    assert_eq!(header(&ok(&allowed).headers, "x-auth-subject"), Some("ci"));
    assert_eq!(
        header(&ok(&allowed).headers, "x-auth-scopes"),
        Some("read:data write:data")
    );
    ok(&server.check(&[("x-api-key", "file-key-1")]).await);
    assert_invalid_token(
        &server.check(&[("x-api-key", "guess")]).await,
        "API key is not valid",
    );
    // The key in the Authorization header is not where this provider looks.
    let elsewhere = server.check_bearer("config-key-1").await;
    assert_eq!(denied(&elsewhere).status.as_ref().unwrap().code, 401);
    assert!(!denied(&elsewhere).headers.iter().any(|h| h
        .header
        .as_ref()
        .unwrap()
        .value
        .contains("error=")));

    // Rotate the file: the new key works within the reload interval, the old one stops.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    std::fs::write(
        &file,
        format!(
            "- {{sha256: '{}', principal: file-bot-2}}\n",
            hash("file-key-2")
        ),
    )
    .unwrap();
    let mut reloaded = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if matches!(server.check(&[("x-api-key", "file-key-2")]).await.status, Some(ref s) if s.code == 0)
        {
            reloaded = true;
            break;
        }
    }
    assert!(reloaded, "the keys file is re-read when it changes");
    assert_invalid_token(
        &server.check(&[("x-api-key", "file-key-1")]).await,
        "API key",
    );
    // A broken file keeps the keys loaded before.
    std::fs::write(&file, "not: [a list").unwrap();
    tokio::time::sleep(Duration::from_millis(2200)).await;
    ok(&server.check(&[("x-api-key", "file-key-2")]).await);
}

#[tokio::test]
async fn mtls_peer_identity_from_principal_or_certificate() {
    let yaml = "providers:
  - name: mesh
    type: mtls
    trust_domains: [cluster.local]
    san_patterns: ['spiffe://cluster.local/ns/*/sa/checkout']";
    let server = TestServer::start(yaml).await.ready().await;
    let with_peer = |principal: &str, certificate: &str| {
        let mut req = request(&[]);
        req.attributes.as_mut().unwrap().source =
            Some(portcullis::pb::auth::attribute_context::Peer {
                principal: principal.into(),
                certificate: certificate.into(),
                ..Default::default()
            });
        req
    };
    let mut client = server.client().await;
    let answer = client
        .check(with_peer("spiffe://cluster.local/ns/shop/sa/checkout", ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        header(&ok(&answer).headers, "x-auth-subject"),
        Some("spiffe://cluster.local/ns/shop/sa/checkout")
    );
    for untrusted in [
        "spiffe://evil.example/ns/shop/sa/checkout",
        "spiffe://cluster.local/ns/shop/sa/other",
    ] {
        let answer = client
            .check(with_peer(untrusted, ""))
            .await
            .unwrap()
            .into_inner();
        assert_invalid_token(&answer, "certificate identity is not trusted");
    }

    // Only the certificate (include_peer_certificate): the SPIFFE URI SAN is the principal.
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![rcgen::SanType::URI(
        rcgen::string::Ia5String::try_from("spiffe://cluster.local/ns/pay/sa/checkout").unwrap(),
    )];
    let key = rcgen::KeyPair::generate().unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    // Envoy percent-encodes the PEM (spaces and newlines as %20 / %0A; base64's `+` stays literal).
    let encoded: String = pem
        .bytes()
        .map(|b| match b {
            b' ' | b'\n' | b'%' => format!("%{b:02X}"),
            _ => (b as char).to_string(),
        })
        .collect();
    let answer = client
        .check(with_peer("", &encoded))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        header(&ok(&answer).headers, "x-auth-subject"),
        Some("spiffe://cluster.local/ns/pay/sa/checkout")
    );
    // No peer identity at all: no credential.
    let answer = client.check(request(&[])).await.unwrap().into_inner();
    assert_eq!(answer.status.as_ref().unwrap().code, 16);
}

#[tokio::test]
async fn envoy_verified_jwt_payloads_from_metadata() {
    let yaml = "providers:\n  - {name: edge, type: envoy_jwt, issuers: ['https://idp.example/']}";
    let server = TestServer::start(yaml).await.ready().await;
    let with_payload = |payload: Value| {
        let mut req = request(&[]);
        let namespace = portcullis::pb::Struct {
            fields: [("jwt_payload".to_owned(), prost_value(payload))].into(),
            ..Default::default()
        };
        req.attributes.as_mut().unwrap().metadata_context = Some(portcullis::pb::core::Metadata {
            filter_metadata: [("envoy.filters.http.jwt_authn".to_owned(), namespace)].into(),
            ..Default::default()
        });
        req
    };
    let mut client = server.client().await;
    let answer = client
        .check(with_payload(
            json!({"iss": "https://idp.example/", "sub": "u-9", "scope": "a b", "exp": now() + 60}),
        ))
        .await
        .unwrap()
        .into_inner();
    let allowed = ok(&answer);
    assert_eq!(header(&allowed.headers, "x-auth-subject"), Some("u-9"));
    assert_eq!(header(&allowed.headers, "x-auth-scopes"), Some("a b"));
    let answer = client
        .check(with_payload(
            json!({"iss": "https://other.example/", "sub": "u-9"}),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_invalid_token(&answer, "issuer is not trusted");

    // Issue 28 finding 5: a token bound to a DPoP key (`cnf.jkt`) that jwt_authn verified is held to the
    // same binding rules as a `jwt` provider's: as Bearer, or with no token to check a proof against, it
    // is refused (RFC 9449 §7.2), never allowed without a proof.
    let bound = json!({"iss": "https://idp.example/", "sub": "u-9", "exp": now() + 60,
        "cnf": {"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}});
    for authorization in [Some("Bearer eyJ.bound.token"), None] {
        let mut req = with_payload(bound.clone());
        if let Some(value) = authorization {
            http_of(&mut req)
                .headers
                .insert("authorization".to_owned(), value.to_owned());
        }
        let answer = client.check(req).await.unwrap().into_inner();
        assert_eq!(
            answer.status.as_ref().unwrap().message,
            "dpop_bearer_downgrade",
            "{authorization:?}: {answer:?}"
        );
    }
}

fn prost_value(v: Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap()),
        Value::String(s) => Kind::StringValue(s),
        Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.into_iter().map(prost_value).collect(),
        }),
        Value::Object(m) => Kind::StructValue(prost_types::Struct {
            fields: m.into_iter().map(|(k, v)| (k, prost_value(v))).collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

#[tokio::test]
async fn chain_order_jws_to_jwt_opaque_to_introspection() {
    let idp = FakeIdp::start().await;
    let key = TestKey::ec("k");
    idp.set_keys(&[&key]);
    let up = FakeUpstream::start().await;
    up.answer(
        "introspect:opaque",
        200,
        json!({"active": true, "sub": "from-introspection"}),
    );
    let yaml = format!(
        "server: {{drain_seconds: 0}}
providers:
  - {{name: tokens, type: jwt, issuer: '{}', audiences: [api], algorithms: [ES256]}}
  - name: opaque
    type: introspection
    endpoint: '{}'
    client_id: c
    client_secret: {{env: S}}
  - {{name: guest, type: anonymous}}
default_route: {{allow_anonymous: true}}",
        idp.issuer,
        up.url("/introspect")
    );
    let secrets = portcullis::io::sources_with([("S".to_owned(), "x".to_owned())].into());
    let server = TestServer::start_with(&yaml, secrets, portcullis::Clock::system())
        .await
        .ready()
        .await;

    let jwt = server
        .check_bearer(&key.token(&claims(&idp.issuer, "api")))
        .await;
    assert_eq!(header(&ok(&jwt).headers, "x-auth-provider"), Some("tokens"));
    assert_eq!(
        up.hits(),
        0,
        "a JWS-shaped token never goes to introspection"
    );

    let opaque = server.check_bearer("opaque").await;
    assert_eq!(
        header(&ok(&opaque).headers, "x-auth-provider"),
        Some("opaque")
    );
    assert_eq!(
        header(&ok(&opaque).headers, "x-auth-subject"),
        Some("from-introspection")
    );

    // No credential at all: the anonymous provider answers.
    let guest = server.check(&[]).await;
    assert_eq!(
        header(&ok(&guest).headers, "x-auth-subject"),
        Some("anonymous")
    );
    assert_eq!(
        header(&ok(&guest).headers, "x-auth-provider"),
        Some("guest")
    );

    // A rejected credential is never "upgraded" to anonymous.
    assert_invalid_token(&server.check_bearer("dead").await, "not active");
    let mut expired = claims(&idp.issuer, "api");
    expired["exp"] = json!(now() - 600);
    assert_invalid_token(&server.check_bearer(&key.token(&expired)).await, "expired");

    // Rejected beats unavailable: with introspection down, a bad JWT is still a 401.
    up.set_mode(Mode::Fail500);
    assert_invalid_token(&server.check_bearer(&key.token(&expired)).await, "expired");
    // Unavailable with nothing rejected is an error answer.
    error_answer(&server.check_bearer("opaque-unknown").await);
}

#[tokio::test]
async fn credential_locations_cookie_query_and_conflicts() {
    let hash = portcullis::hash_key;
    let yaml = format!(
        "providers:
  - name: session
    type: api_key
    credential: {{cookie: sid}}
    keys: [{{sha256: '{}', principal: cookie-user, kind: human}}]
  - name: link
    type: api_key
    credential: {{query: api_key}}
    keys: [{{sha256: '{}', principal: query-user}}]
  - name: github
    type: api_key
    credential: {{header: authorization, scheme: token}}
    keys: [{{sha256: '{}', principal: token-user}}]",
        hash("c-1"),
        hash("q-1"),
        hash("t-1")
    );
    let server = TestServer::start(&yaml).await.ready().await;
    let cookie = server.check(&[("cookie", "theme=dark; sid=c-1")]).await;
    assert_eq!(
        header(&ok(&cookie).headers, "x-auth-subject"),
        Some("cookie-user")
    );

    let mut req = request(&[]);
    http_of(&mut req).path = "/x?api_key=q-1".into();
    let query = server.send(req.clone()).await;
    assert_eq!(
        header(&ok(&query).headers, "x-auth-subject"),
        Some("query-user")
    );

    let scheme = server.check(&[("authorization", "token t-1")]).await;
    assert_eq!(
        header(&ok(&scheme).headers, "x-auth-subject"),
        Some("token-user")
    );

    // Two different credentials for one provider: invalid_request, 400.
    http_of(&mut req).path = "/x?api_key=q-1&api_key=q-2".into();
    let twice = server.send(req).await;
    assert_eq!(denied(&twice).status.as_ref().unwrap().code, 400);
    assert_eq!(body(&twice)["error"], "invalid_request");

    // Nothing anywhere: a 401 naming every scheme a provider reads from Authorization.
    let none = server.check(&[]).await;
    assert_eq!(
        header(&denied(&none).headers, "www-authenticate"),
        Some("token realm=\"portcullis\"")
    );
}

#[tokio::test]
async fn hash_key_prints_the_digest_the_config_wants() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["hash-key", "my-key"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    assert_eq!(printed.trim(), portcullis::hash_key("my-key"));
    // SHA-256 of "my-key", computed independently (sha256sum).
    assert_eq!(
        printed.trim(),
        "sha256:5e78863ed1ffb9fc66b1d61634b126bf8eb20267e7996297eeeb9b19c8c0f732"
    );
    // From standard input, so the key stays out of shell history.
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("hash-key")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"my-key\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), printed);
}

/// Issue 28 finding 16: a certificate-bound token (`cnf.x5t#S256`, RFC 8705) is accepted only over a
/// connection whose client certificate (Envoy's `include_peer_certificate`) has that thumbprint.
#[tokio::test]
async fn a_certificate_bound_token_needs_its_certificate() {
    use base64::Engine as _;
    use sha2::Digest as _;
    let idp = FakeIdp::start().await;
    let key = TestKey::ec("k");
    idp.set_keys(&[&key]);
    let yaml = format!(
        "providers:\n  - {{name: corp, type: jwt, issuer: '{}', audiences: [api], algorithms: [ES256]}}",
        idp.issuer
    );
    let server = TestServer::start(&yaml).await.ready().await;
    let certificate = |name: &str| {
        let params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap()
    };
    let (bound_to, other) = (certificate("client.example"), certificate("other.example"));
    let thumbprint = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(bound_to.der()));
    let encode = |pem: &str| -> String {
        pem.bytes()
            .map(|b| match b {
                b' ' | b'\n' | b'%' => format!("%{b:02X}"),
                _ => (b as char).to_string(),
            })
            .collect()
    };
    let mut claims = claims(&idp.issuer, "api");
    claims["cnf"] = json!({"x5t#S256": thumbprint});
    let bearer = format!("Bearer {}", key.token(&claims));
    let with_certificate = |pem: Option<&str>| {
        let mut req = request(&[("authorization", &bearer)]);
        if let Some(pem) = pem {
            req.attributes.as_mut().unwrap().source =
                Some(portcullis::pb::auth::attribute_context::Peer {
                    certificate: encode(pem),
                    ..Default::default()
                });
        }
        req
    };
    let mut client = server.client().await;
    let answer = client
        .check(with_certificate(Some(&bound_to.pem())))
        .await
        .unwrap()
        .into_inner();
    ok(&answer);
    for pem in [Some(other.pem()), None] {
        let answer = client
            .check(with_certificate(pem.as_deref()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            answer.status.as_ref().unwrap().message,
            "certificate_binding_mismatch",
            "{answer:?}"
        );
        assert_eq!(denied(&answer).status.as_ref().unwrap().code, 401);
    }
}
