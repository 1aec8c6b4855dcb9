//! The security review's findings (issue 13), each as an attack against the real server over gRPC: a
//! forged token beside a valid API key, credentials offered to providers that cannot own them, repeated
//! policy headers, near-variant paths, permissive mode, redirects, reserved headers and more. Every test
//! here failed on the code before its fix.

use portcullis_test as common;

use common::upstream::{FakeUpstream, Mode};
use common::*;
use portcullis::pb::auth::CheckResponse;
use serde_json::{json, Value};

/// The HTTP status a client would see.
fn status(response: &CheckResponse) -> u32 {
    match &response.http_response {
        Some(portcullis::pb::auth::check_response::HttpResponse::OkResponse(_)) => 200,
        Some(portcullis::pb::auth::check_response::HttpResponse::DeniedResponse(d)) => {
            d.status.as_ref().unwrap().code as u32
        }
        Some(portcullis::pb::auth::check_response::HttpResponse::ErrorResponse(e)) => {
            e.status.as_ref().unwrap().code as u32
        }
        None => panic!("no http response: {response:?}"),
    }
}

/// A token with a valid header and signature from `key`, whose payload was swapped for `forged` claims.
fn forged(key: &TestKey, claims: &Value, forged: &Value) -> String {
    let genuine = key.token(claims);
    let parts: Vec<&str> = genuine.split('.').collect();
    format!("{}.{}.{}", parts[0], b64(forged.to_string()), parts[2])
}

/// `corp` (jwt) then `xkeys` (api_key in `x-api-key`), plus whatever `extra` adds.
async fn jwt_and_api_key(idp: &FakeIdp, extra: &str) -> TestServer {
    let yaml = format!(
        "server: {{drain_seconds: 0}}
providers:
  - {{name: corp, type: jwt, issuer: '{}', audiences: [api], algorithms: [ES256]}}
  - name: xkeys
    type: api_key
    credential: {{header: x-api-key}}
    keys: [{{sha256: '{}', principal: ci-bot}}]
{extra}",
        idp.issuer,
        portcullis::hash_key("valid-key"),
    );
    TestServer::start(&yaml).await.ready().await
}

#[tokio::test]
async fn a_rejected_credential_stops_the_chain() {
    let idp = FakeIdp::start().await;
    let key = TestKey::ec("k");
    idp.set_keys(&[&key]);
    let server = jwt_and_api_key(&idp, "").await;

    // The API key alone is fine.
    let alone = server.check(&[("x-api-key", "valid-key")]).await;
    assert_eq!(
        header(&ok(&alone).headers, "x-auth-subject"),
        Some("ci-bot")
    );

    // A JWT with a forged payload beside it: 401, the forged token never goes upstream.
    let mut admin = claims(&idp.issuer, "api");
    admin["sub"] = json!("admin");
    let token = forged(&key, &claims(&idp.issuer, "api"), &admin);
    let auth = format!("Bearer {token}");
    let both = server
        .check(&[("authorization", &auth), ("x-api-key", "valid-key")])
        .await;
    assert_invalid_token(&both, "signature");

    // Sibling: an expired token beside a valid key.
    let mut expired = claims(&idp.issuer, "api");
    expired["exp"] = json!(now() - 600);
    let auth = format!("Bearer {}", key.token(&expired));
    let both = server
        .check(&[("authorization", &auth), ("x-api-key", "valid-key")])
        .await;
    assert_invalid_token(&both, "expired");

    // Sibling: a valid JWT beside a wrong API key (the later credential is judged too).
    let auth = format!("Bearer {}", key.token(&claims(&idp.issuer, "api")));
    let both = server
        .check(&[("authorization", &auth), ("x-api-key", "wrong-key")])
        .await;
    assert_invalid_token(&both, "API key");

    // Sibling: an opaque token where only the jwt provider reads, beside a valid key: not understood.
    let both = server
        .check(&[
            ("authorization", "Bearer opaque"),
            ("x-api-key", "valid-key"),
        ])
        .await;
    assert_invalid_token(&both, "not a JWT");
}

#[tokio::test]
async fn an_undecidable_credential_beside_a_valid_one_is_an_error() {
    let idp = FakeIdp::start().await;
    let key = TestKey::ec("k");
    idp.set_keys(&[&key]);
    let up = FakeUpstream::start().await;
    let yaml = format!(
        "server: {{drain_seconds: 0}}
providers:
  - name: idp
    type: introspection
    endpoint: '{}'
    client_id: c
    client_secret: {{env: S}}
    upstream: {{timeout_seconds: 1}}
  - name: xkeys
    type: api_key
    credential: {{header: x-api-key}}
    keys: [{{sha256: '{}', principal: ci-bot}}]",
        up.url("/introspect"),
        portcullis::hash_key("valid-key"),
    );
    let secrets = portcullis::io::sources_with([("S".to_owned(), "x".to_owned())].into());
    let server = TestServer::start_with(&yaml, secrets, portcullis::Clock::system())
        .await
        .ready()
        .await;
    up.set_mode(Mode::Fail500);
    let r = server
        .check(&[
            ("authorization", "Bearer opaque-1"),
            ("x-api-key", "valid-key"),
        ])
        .await;
    assert_eq!(status(&r), 503, "{r:?}");
}

#[tokio::test]
async fn a_jws_on_an_opaque_only_route_is_never_anonymous() {
    let yaml = format!(
        "providers:
  - name: keys
    type: api_key
    keys: [{{sha256: '{}', principal: ci-bot}}]
  - {{name: guest, type: anonymous}}
default_route: {{allow_anonymous: true}}",
        portcullis::hash_key("valid-key")
    );
    let server = TestServer::start(&yaml).await.ready().await;
    ok(&server.check(&[]).await);
    ok(&server.check_bearer("valid-key").await);
    let r = server
        .check_bearer("eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.x")
        .await;
    assert_invalid_token(&r, "not of a kind");
}

#[tokio::test]
async fn permissive_mode_never_passes_a_failed_credential() {
    let idp = FakeIdp::start().await;
    let key = TestKey::ec("k");
    idp.set_keys(&[&key]);
    let yaml = format!(
        "server: {{drain_seconds: 0}}
providers:
  - {{name: corp, type: jwt, issuer: '{}', audiences: [api], algorithms: [ES256]}}
mode: permissive
default_route: {{require: {{scopes: {{all_of: [admin]}}}}}}",
        idp.issuer
    );
    let server = TestServer::start(&yaml).await.ready().await;

    // The rollout still works: no credential, or unmet requirements, go through marked.
    let none = server.check(&[]).await;
    assert_eq!(
        header(&ok(&none).headers, "x-auth-would-deny"),
        Some("missing_credential")
    );
    let valid = server
        .check_bearer(&key.token(&claims(&idp.issuer, "api")))
        .await;
    assert_eq!(
        header(&ok(&valid).headers, "x-auth-would-deny"),
        Some("missing_scope")
    );

    // A forged token is a 401, not a marked permit.
    let mut admin = claims(&idp.issuer, "api");
    admin["scope"] = json!("admin");
    let token = forged(&key, &claims(&idp.issuer, "api"), &admin);
    assert_invalid_token(&server.check_bearer(&token).await, "signature");
    // So is an expired one, and garbage.
    let mut expired = claims(&idp.issuer, "api");
    expired["exp"] = json!(now() - 600);
    assert_invalid_token(&server.check_bearer(&key.token(&expired)).await, "expired");
    assert_eq!(status(&server.check_bearer("a.b.c").await), 401);
}

#[tokio::test]
async fn permissive_mode_with_an_unreachable_idp_is_an_error_never_a_permit() {
    let idp = FakeIdp::start().await;
    idp.set_mode(IdpMode::Fail500);
    let key = TestKey::ec("k");
    let yaml = format!(
        "server: {{drain_seconds: 0}}
providers:
  - {{name: corp, type: jwt, issuer: '{}', audiences: [api], algorithms: [ES256]}}
mode: permissive",
        idp.issuer
    );
    // Never ready: the keys are never loaded.
    let server = TestServer::start(&yaml).await;
    let r = server
        .check_bearer(&key.token(&claims(&idp.issuer, "api")))
        .await;
    assert_eq!(status(&r), 503, "{r:?}");
    assert_eq!(r.status.as_ref().unwrap().code, 14, "UNAVAILABLE");
}

fn portcullis(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `validate-config`; the exit code and its output, stdout then stderr (where warnings go).
fn validate(yaml: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("portcullis.yaml");
    std::fs::write(&path, yaml).unwrap();
    let (code, stdout, stderr) =
        portcullis(&["validate-config", "--skip-secrets", path.to_str().unwrap()]);
    (code, stdout + &stderr)
}

#[test]
fn validate_config_warns_about_weak_configs() {
    let (code, stdout) = validate(
        "providers:
  - {name: mesh, type: mtls}
  - {name: gw, type: envoy_jwt}
  - {name: corp, type: jwt, issuer: 'https://a.example/', audiences: [x]}
  - {name: gh, type: github}
mode: permissive
routes:
  - {name: admin, match: {path: /admin, methods: [POST]}, mode: enforce, require: {scopes: {all_of: [admin]}}}
",
    );
    assert_eq!(code, 0, "{stdout}");
    let warnings: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("warning: "))
        .collect();
    for needle in [
        "warning: providers[0]: an mtls provider",
        "warning: providers[1].issuers: an envoy_jwt provider",
        "warning: providers[3].credential: 2 providers read the Authorization header",
        "warning: mode: permissive mode is global",
        "warning: routes[0].match.path: the default route is laxer",
    ] {
        assert!(
            warnings.iter().any(|w| w.starts_with(needle)),
            "{needle} in {stdout}"
        );
    }
    assert_eq!(warnings.len(), 5, "{stdout}");
}

#[test]
fn several_opaque_providers_on_one_place_need_an_explicit_order() {
    let yaml = |flag: &str| {
        format!(
            "providers:
  - {{name: keys, type: api_key, keys: [{{sha256: '{}', principal: ci}}]{flag}}}
  - {{name: gh, type: github{flag}}}
",
            portcullis::hash_key("k")
        )
    };
    let (code, stdout) = validate(&yaml(""));
    assert_eq!(code, 64, "{stdout}");
    assert!(
        stdout.contains("providers[1].credential: `keys` and `gh` both read opaque credentials"),
        "{stdout}"
    );
    let (code, stdout) = validate(&yaml(", shared_location_order: true"));
    assert_eq!(code, 0, "{stdout}");
}

#[test]
fn serve_dev_refuses_non_loopback_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (code, _, stderr) = portcullis(&[
        "serve",
        "--dev",
        "--listen",
        "0.0.0.0:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.contains("only listens on loopback"), "{stderr}");
    let (code, _, stderr) = portcullis(&[
        "serve",
        "--dev",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "[::]:0",
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.contains("--admin-listen"), "{stderr}");
}

#[tokio::test]
async fn the_webhook_never_receives_other_credentials() {
    let up = FakeUpstream::start().await;
    up.answer("webhook:wh-1", 200, json!({"principal": "team-a"}));
    let yaml = format!(
        "providers:
  - {{name: hook, type: webhook, endpoint: '{}'}}
  - name: keys
    type: api_key
    credential: {{header: x-api-key}}
    keys: [{{sha256: '{}', principal: ci}}]
  - name: link
    type: api_key
    credential: {{query: token}}
    keys: [{{sha256: '{}', principal: link}}]
  - name: session
    type: api_key
    credential: {{cookie: sid}}
    keys: [{{sha256: '{}', principal: web}}]",
        up.url("/webhook"),
        portcullis::hash_key("valid-key"),
        portcullis::hash_key("valid-link"),
        portcullis::hash_key("valid-sid"),
    );
    let server = TestServer::start(&yaml).await.ready().await;
    let mut req = request(&[
        ("authorization", "Bearer wh-1"),
        ("x-api-key", "valid-key"),
        ("proxy-authorization", "Basic dXNlcjpwYXNz"),
        ("cookie", "sid=valid-sid"),
        ("x-trace", "abc"),
    ]);
    http_of(&mut req).path = "/v1/models?token=valid-link&limit=5".into();
    let r = server.send(req).await;
    assert_eq!(header(&ok(&r).headers, "x-auth-subject"), Some("team-a"));
    let sent: Value = serde_json::from_str(&up.captured()[0].body).unwrap();
    let headers = sent["request"]["headers"].as_object().unwrap();
    assert_eq!(headers["x-trace"], "abc");
    for name in [
        "authorization",
        "x-api-key",
        "proxy-authorization",
        "cookie",
    ] {
        assert!(!headers.contains_key(name), "{name} was sent: {sent}");
    }
    assert_eq!(sent["request"]["params"]["limit"], json!(["5"]));
    assert!(
        sent["request"]["params"].get("token").is_none(),
        "the query credential was sent: {sent}"
    );
}

#[tokio::test]
async fn an_opaque_credential_goes_only_to_its_owner() {
    let up = FakeUpstream::start().await;
    up.answer("webhook:hook-token", 200, json!({"principal": "team-a"}));
    let yaml = format!(
        "providers:
  - {{name: keys, type: api_key, shared_location_order: true, keys: [{{sha256: '{}', principal: ci}}]}}
  - {{name: hook, type: webhook, shared_location_order: true, endpoint: '{}'}}",
        portcullis::hash_key("valid-key"),
        up.url("/webhook"),
    );
    let server = TestServer::start(&yaml).await.ready().await;
    // The first provider owns the key: the webhook never sees it.
    let r = server.check_bearer("valid-key").await;
    assert_eq!(header(&ok(&r).headers, "x-auth-subject"), Some("ci"));
    assert_eq!(up.hits(), 0);
    // In the declared order, a credential the first rejects goes to the next.
    let r = server.check_bearer("hook-token").await;
    assert_eq!(header(&ok(&r).headers, "x-auth-subject"), Some("team-a"));
    // Rejected by both: the first rejection is the answer.
    assert_invalid_token(&server.check_bearer("nobody").await, "API key");
}

/// A request whose headers arrive as Envoy's raw list (`encode_raw_headers`), one entry per line.
fn raw_request(path: &str, lines: &[(&str, &str)]) -> portcullis::pb::auth::CheckRequest {
    use portcullis::pb::core::{HeaderMap, HeaderValue};
    let mut req = request(&[]);
    let http = http_of(&mut req);
    http.path = path.into();
    http.header_map = Some(HeaderMap {
        headers: lines
            .iter()
            .map(|(k, v)| HeaderValue {
                key: (*k).into(),
                value: String::new(),
                raw_value: v.as_bytes().to_vec(),
            })
            .collect(),
    });
    req
}

#[tokio::test]
async fn a_policy_header_sent_twice_is_a_denial() {
    let idp = FakeIdp::start().await;
    let key = TestKey::ec("k");
    idp.set_keys(&[&key]);
    let yaml = format!(
        "server: {{drain_seconds: 0}}
providers:
  - {{name: corp, type: jwt, issuer: '{}', audiences: [api], algorithms: [ES256]}}
routes:
  - {{name: beta, match: {{headers: {{x-beta: 'on'}}}}, require: {{scopes: {{all_of: [beta]}}}}}}
default_route: {{require: {{organization: {{from_header: x-org-id}}}}}}",
        idp.issuer
    );
    let server = TestServer::start(&yaml).await.ready().await;
    let mut acme = claims(&idp.issuer, "api");
    acme["org_id"] = json!("acme");
    let auth = format!("Bearer {}", key.token(&acme));

    let once = server
        .send(raw_request(
            "/x",
            &[("authorization", &auth), ("x-org-id", "acme")],
        ))
        .await;
    ok(&once);
    let twice = server
        .send(raw_request(
            "/x",
            &[
                ("authorization", &auth),
                ("x-org-id", "acme"),
                ("x-org-id", "evil"),
            ],
        ))
        .await;
    assert_eq!(status(&twice), 400, "{twice:?}");
    assert_eq!(twice.status.as_ref().unwrap().message, "repeated_header");

    // Sibling: a route-matching header sent twice cannot pick the laxer route by its first line.
    let twice = server
        .send(raw_request(
            "/x",
            &[
                ("authorization", &auth),
                ("x-org-id", "acme"),
                ("X-Beta", "off"),
                ("x-beta", "on"),
            ],
        ))
        .await;
    assert_eq!(status(&twice), 400, "{twice:?}");
}

/// Issue 28 finding 2: a header a policy reads from inside `any_of`/`not`, or through an expression, sent
/// twice is refused like a top-level `organization.from_header`: no decision rests on one of the lines.
#[tokio::test]
async fn a_policy_header_read_in_a_group_or_an_expression_sent_twice_is_a_denial() {
    let idp = FakeIdp::start().await;
    let key = TestKey::ec("k");
    idp.set_keys(&[&key]);
    let yaml = format!(
        "server: {{drain_seconds: 0}}
providers:
  - {{name: corp, type: jwt, issuer: '{}', audiences: [api], algorithms: [ES256]}}
routes:
  - name: any-of
    match: {{path_prefix: /any}}
    require: {{any_of: [{{organization: {{from_header: x-org-id}}}}, {{scopes: {{all_of: [root]}}}}]}}
  - name: not
    match: {{path_prefix: /not}}
    require: {{not: {{organization: {{from_header: x-blocked-org}}}}}}
  - name: literal
    match: {{path_prefix: /literal}}
    require: {{expression: \"request.headers['x-org-id'] == claims.org_id\"}}
  - name: field
    match: {{path_prefix: /field}}
    require: {{expression: 'request.headers.x_team == \"red\"'}}
  - name: dynamic
    match: {{path_prefix: /dynamic}}
    require: {{expression: 'request.headers.exists(h, h.startsWith(\"x-org\") && request.headers[h] == claims.org_id)'}}",
        idp.issuer
    );
    let server = TestServer::start(&yaml).await.ready().await;
    let mut acme = claims(&idp.issuer, "api");
    acme["org_id"] = json!("acme");
    let auth = format!("Bearer {}", key.token(&acme));
    type Lines<'a> = &'a [(&'a str, &'a str)];
    let cases: [(&str, Lines<'_>, Lines<'_>); 5] = [
        (
            "/any",
            &[("x-org-id", "acme")],
            &[("x-org-id", "acme"), ("x-org-id", "victim")],
        ),
        (
            "/not",
            &[("x-blocked-org", "victim")],
            &[("x-blocked-org", "victim"), ("x-blocked-org", "acme")],
        ),
        (
            "/literal",
            &[("x-org-id", "acme")],
            &[("x-org-id", "acme"), ("X-Org-Id", "victim")],
        ),
        (
            "/field",
            &[("x_team", "red")],
            &[("x_team", "red"), ("x_team", "blue")],
        ),
        (
            "/dynamic",
            &[("x-org", "acme"), ("accept", "a")],
            // Any repeated header: which lines the expression reads is only known while it runs.
            &[("x-org", "acme"), ("accept", "a"), ("accept", "b")],
        ),
    ];
    for (path, once, twice) in cases {
        let mut lines = vec![("authorization", auth.as_str())];
        lines.extend_from_slice(once);
        let answer = server.send(raw_request(path, &lines)).await;
        ok(&answer);
        let mut lines = vec![("authorization", auth.as_str())];
        lines.extend_from_slice(twice);
        let answer = server.send(raw_request(path, &lines)).await;
        assert_eq!(status(&answer), 400, "{path}: {answer:?}");
        assert_eq!(
            answer.status.as_ref().unwrap().message,
            "repeated_header",
            "{path}"
        );
    }
}

#[tokio::test]
async fn near_variants_of_an_exact_path_never_take_the_laxer_route() {
    let idp = FakeIdp::start().await;
    let key = TestKey::ec("k");
    idp.set_keys(&[&key]);
    let yaml = format!(
        "server: {{drain_seconds: 0}}
providers:
  - {{name: corp, type: jwt, issuer: '{}', audiences: [api], algorithms: [ES256]}}
routes:
  - {{name: admin, match: {{path: /admin, methods: [POST]}}, require: {{scopes: {{all_of: [admin]}}}}}}
  - {{name: runs, match: {{path: /api/getRunForLabeling}}, require: {{scopes: {{all_of: [label]}}}}}}",
        idp.issuer
    );
    let server = TestServer::start(&yaml).await.ready().await;
    let reader = format!("Bearer {}", key.token(&claims(&idp.issuer, "api")));
    let mut admin_claims = claims(&idp.issuer, "api");
    admin_claims["scope"] = json!("admin label");
    let admin = format!("Bearer {}", key.token(&admin_claims));
    let call =
        |method: &str, path: &str, auth: &str| request_to(method, path, &[("authorization", auth)]);

    assert_eq!(
        status(&server.send(call("POST", "/admin", &reader)).await),
        403
    );
    for variant in [
        "/admin/",
        "/Admin",
        "/ADMIN",
        "/admin;x",
        "/admin%3Bx",
        "/admin%3bx",
        "/admin.",
        "/admin%20",
        "/admin%2E",
        "//admin",
        "/x/../admin",
        "/%61dmin",
    ] {
        let r = server.send(call("POST", variant, &reader)).await;
        let code = status(&r);
        assert!(code == 403 || code == 400, "POST {variant}: {code} {r:?}");
    }
    // The trailing slash is the same route, for the admin too.
    assert_eq!(
        status(&server.send(call("POST", "/admin/", &admin)).await),
        200
    );
    assert_eq!(
        status(&server.send(call("POST", "/admin?x=1", &admin)).await),
        200
    );
    // Other methods and other paths are the default route's, variants or not.
    assert_eq!(
        status(&server.send(call("GET", "/Admin", &reader)).await),
        200
    );
    assert_eq!(
        status(&server.send(call("POST", "/admins", &reader)).await),
        200
    );
    assert_eq!(
        status(&server.send(call("POST", "/admin/x", &reader)).await),
        200
    );
    // A pattern with capitals matches itself and its variants.
    let runs = "/api/getRunForLabeling";
    assert_eq!(status(&server.send(call("GET", runs, &admin)).await), 200);
    assert_eq!(status(&server.send(call("GET", runs, &reader)).await), 403);
    let r = server
        .send(call("GET", "/api/getrunforlabeling", &reader))
        .await;
    assert!(matches!(status(&r), 400 | 403), "{r:?}");
}

#[tokio::test]
async fn headers_portcullis_sets_are_reserved() {
    // claim_headers may not name them.
    for reserved in ["x-auth-would-deny", "x-auth-decision-id"] {
        let yaml = format!(
            "providers:
  - {{name: corp, type: jwt, issuer: 'https://a.example/', audiences: [api], claim_headers: {{role: {reserved}}}}}"
        );
        let errors = portcullis::Config::from_yaml_str(&yaml).unwrap_err();
        assert!(
            errors
                .0
                .iter()
                .any(|p| p.path == "providers[0].claim_headers.role"
                    && p.message.contains("set by portcullis itself")),
            "{reserved}: {:?}",
            errors.0
        );
    }
    // A webhook's attributes cannot emit them either.
    let up = FakeUpstream::start().await;
    up.answer(
        "webhook:wh-1",
        200,
        json!({"principal": "team-a", "attributes": {
            "would-deny": ["nothing"], "decision-id": ["forged"], "roles": ["dev"]}}),
    );
    let yaml = format!(
        "providers:\n  - {{name: hook, type: webhook, endpoint: '{}'}}",
        up.url("/webhook")
    );
    let server = TestServer::start(&yaml).await.ready().await;
    let r = server.check_bearer("wh-1").await;
    let allowed = ok(&r);
    let named = |name: &str| {
        allowed
            .headers
            .iter()
            .filter(|h| h.header.as_ref().unwrap().key == name)
            .count()
    };
    assert_eq!(named("x-auth-would-deny"), 0, "{allowed:?}");
    assert_eq!(named("x-auth-decision-id"), 1, "{allowed:?}");
    assert_ne!(
        header(&allowed.headers, "x-auth-decision-id"),
        Some("forged")
    );
    assert_eq!(header(&allowed.headers, "x-auth-roles"), Some("dev"));
}

#[tokio::test]
async fn claim_header_arrays_never_smuggle_extra_values() {
    let idp = FakeIdp::start().await;
    let key = TestKey::ec("k");
    idp.set_keys(&[&key]);
    let yaml = format!(
        "server: {{drain_seconds: 0}}
providers:
  - {{name: corp, type: jwt, issuer: '{}', audiences: [api], algorithms: [ES256], claim_headers: {{perms: x-auth-perms}}}}",
        idp.issuer
    );
    let server = TestServer::start(&yaml).await.ready().await;
    let mut c = claims(&idp.issuer, "api");
    c["perms"] = json!(["read,admin:all", "x"]);
    let r = server.check_bearer(&key.token(&c)).await;
    assert_eq!(header(&ok(&r).headers, "x-auth-perms"), Some("x"));
}

#[tokio::test]
async fn underscore_spellings_of_identity_headers_are_stripped() {
    let server = TestServer::start(&format!(
        "providers:
  - {{name: keys, type: api_key, credential: {{header: x-api-key}}, keys: [{{sha256: '{}', principal: ci}}]}}",
        portcullis::hash_key("valid-key")
    ))
    .await
    .ready()
    .await;
    let r = server
        .check(&[
            ("x-api-key", "valid-key"),
            ("x_auth_subject", "mallory"),
            ("X_Auth-Tenant", "evil"),
            ("x-auth-roles", "admin"),
            ("x_authority", "kept"),
        ])
        .await;
    let mut removed = ok(&r).headers_to_remove.clone();
    removed.sort();
    assert_eq!(
        removed,
        vec!["x-auth-roles", "x_auth-tenant", "x_auth_subject"]
    );
}

#[tokio::test]
async fn remove_authorization_removes_the_matched_credential_wherever_it_was() {
    let yaml = format!(
        "headers: {{remove_authorization: true}}
providers:
  - {{name: keys, type: api_key, credential: {{header: x-api-key}}, keys: [{{sha256: '{k}', principal: a}}]}}
  - {{name: session, type: api_key, credential: {{cookie: sid}}, keys: [{{sha256: '{k}', principal: b}}]}}
  - {{name: link, type: api_key, credential: {{query: token}}, keys: [{{sha256: '{k}', principal: c}}]}}",
        k = portcullis::hash_key("valid-key")
    );
    let server = TestServer::start(&yaml).await.ready().await;
    let r = server.check(&[("x-api-key", "valid-key")]).await;
    assert_eq!(ok(&r).headers_to_remove, vec!["x-api-key"]);

    let r = server
        .check(&[("cookie", "theme=dark; sid=valid-key; lang=en")])
        .await;
    let allowed = ok(&r);
    assert_eq!(
        header(&allowed.headers, "cookie"),
        Some("theme=dark; lang=en")
    );
    let r = server.check(&[("cookie", "sid=valid-key")]).await;
    assert_eq!(ok(&r).headers_to_remove, vec!["cookie"]);

    let r = server
        .send(request_to("GET", "/x?token=valid-key&page=2", &[]))
        .await;
    assert_eq!(ok(&r).query_parameters_to_remove, vec!["token"]);
}

/// Issue 28 finding 3: every `Cookie` line is read. Two sessions on two lines are two credentials (400
/// `multiple_credentials`), a forged session on the second line is a 401 even on an anonymous route, and the
/// `remove_authorization` rewrite removes the credential from whichever line carried it.
#[tokio::test]
async fn a_cookie_credential_is_read_from_every_cookie_line() {
    let yaml = format!(
        "headers: {{remove_authorization: true}}
default_route: {{allow_anonymous: true}}
providers:
  - {{name: session, type: api_key, credential: {{cookie: sid}}, keys: [{{sha256: '{a}', principal: alice}}, {{sha256: '{b}', principal: bob}}]}}",
        a = portcullis::hash_key("alice-sid"),
        b = portcullis::hash_key("bob-sid"),
    );
    let server = TestServer::start(&yaml).await.ready().await;

    let one = server
        .send(raw_request(
            "/x",
            &[("cookie", "theme=dark; sid=alice-sid")],
        ))
        .await;
    assert_eq!(header(&ok(&one).headers, "x-auth-subject"), Some("alice"));

    let two_sessions = server
        .send(raw_request(
            "/x",
            &[("cookie", "sid=alice-sid"), ("cookie", "sid=bob-sid")],
        ))
        .await;
    assert_eq!(status(&two_sessions), 400, "{two_sessions:?}");
    assert_eq!(
        two_sessions.status.as_ref().unwrap().message,
        "multiple_credentials"
    );

    let forged_second = server
        .send(raw_request(
            "/x",
            &[("cookie", "theme=dark"), ("cookie", "sid=forged")],
        ))
        .await;
    assert_eq!(status(&forged_second), 401, "{forged_second:?}");

    let second_line = server
        .send(raw_request(
            "/x",
            &[("cookie", "theme=dark"), ("cookie", "lang=en; sid=bob-sid")],
        ))
        .await;
    let allowed = ok(&second_line);
    assert_eq!(header(&allowed.headers, "x-auth-subject"), Some("bob"));
    assert_eq!(
        header(&allowed.headers, "cookie"),
        Some("theme=dark; lang=en")
    );
}

/// Issue 28 finding 14: in permissive mode a token for another audience (`require.audience`) is refused
/// as in enforce mode (401 `invalid_token`), never let through as a "would deny"; an unmet scope still is.
#[tokio::test]
async fn permissive_mode_never_passes_a_token_for_another_audience() {
    let idp = FakeIdp::start().await;
    let key = TestKey::ec("k");
    idp.set_keys(&[&key]);
    let yaml = format!(
        "server: {{drain_seconds: 0}}
mode: permissive
providers:
  - {{name: corp, type: jwt, issuer: '{}', audiences: [api, mcp], algorithms: [ES256]}}
routes:
  - {{name: mcp, match: {{path_prefix: /mcp}}, require: {{audience: mcp}}}}
  - {{name: admin, match: {{path_prefix: /admin}}, require: {{scopes: {{all_of: [admin]}}}}}}",
        idp.issuer
    );
    let server = TestServer::start(&yaml).await.ready().await;
    let api = format!("Bearer {}", key.token(&claims(&idp.issuer, "api")));
    let other_audience = server
        .send(request_to("GET", "/mcp/x", &[("authorization", &api)]))
        .await;
    assert_eq!(status(&other_audience), 401, "{other_audience:?}");
    assert_eq!(
        other_audience.status.as_ref().unwrap().message,
        "audience_mismatch"
    );
    let mcp = format!("Bearer {}", key.token(&claims(&idp.issuer, "mcp")));
    ok(&server
        .send(request_to("GET", "/mcp/x", &[("authorization", &mcp)]))
        .await);
    // The rollout case permissive mode is for: an unmet scope passes, marked.
    let scope = server
        .send(request_to("GET", "/admin/x", &[("authorization", &api)]))
        .await;
    assert_eq!(
        header(&ok(&scope).headers, "x-auth-would-deny"),
        Some("missing_scope")
    );
}

/// Issue 28 finding 19: a credential in `Authorization` on a route whose providers do not read it (an API
/// key in `x-api-key` plus anonymous access) is a 401, never an anonymous allow that passes the unverified
/// token upstream; so is a scheme none of the route's providers reads.
#[tokio::test]
async fn an_authorization_credential_no_provider_of_the_route_reads_is_refused() {
    let yaml = format!(
        "default_route: {{allow_anonymous: true, providers: [keys, anon]}}
providers:
  - {{name: keys, type: api_key, credential: {{header: x-api-key}}, keys: [{{sha256: '{k}', principal: ci}}]}}
  - {{name: anon, type: anonymous}}
  - {{name: bearer-keys, type: api_key, keys: [{{sha256: '{k}', principal: ci}}]}}
routes:
  - {{name: bearer, match: {{path_prefix: /bearer}}, providers: [bearer-keys, anon], allow_anonymous: true}}",
        k = portcullis::hash_key("valid-key")
    );
    let server = TestServer::start(&yaml).await.ready().await;
    // Anonymous and API key requests are served as before.
    ok(&server.check(&[]).await);
    let key = server.check(&[("x-api-key", "valid-key")]).await;
    assert_eq!(header(&ok(&key).headers, "x-auth-subject"), Some("ci"));
    for headers in [
        vec![(
            "authorization",
            "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.",
        )],
        vec![
            ("x-api-key", "valid-key"),
            ("authorization", "Bearer forged"),
        ],
        vec![("authorization", "Basic YWRtaW46YWRtaW4=")],
    ] {
        let answer = server.check(&headers).await;
        assert_eq!(status(&answer), 401, "{headers:?}: {answer:?}");
        assert_eq!(
            answer.status.as_ref().unwrap().message,
            "unowned_credential",
            "{headers:?}"
        );
    }
    // Where a provider of the route reads Bearer tokens, it judges them; another scheme is still refused.
    let bearer = server
        .send(request_to(
            "GET",
            "/bearer/x",
            &[("authorization", "Bearer valid-key")],
        ))
        .await;
    assert_eq!(header(&ok(&bearer).headers, "x-auth-subject"), Some("ci"));
    let basic = server
        .send(request_to(
            "GET",
            "/bearer/x",
            &[("authorization", "Basic YWRtaW46YWRtaW4=")],
        ))
        .await;
    assert_eq!(status(&basic), 401, "{basic:?}");
}

/// Issue 28 findings 15 and 18: an HMAC `shared_secret` shorter than its hash (RFC 7518 §3.2) and a
/// `dpop.nonce_secret` under 32 bytes are configuration problems in `validate-config`, not keys in use.
#[test]
fn short_hmac_and_nonce_secrets_are_configuration_problems() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("short.yaml");
    std::fs::write(
        &path,
        "providers:
  - {name: legacy, type: jwt, issuer: legacy, audiences: [x], algorithms: [HS256, HS384], shared_secret: {env: PC_TEST_HS_SECRET}}
  - {name: corp, type: jwt, issuer: 'https://corp.example/', audiences: [x], dpop: {nonce: true, nonce_secret: {env: PC_TEST_NONCE}}}
",
    )
    .unwrap();
    let validate = |hs: &str, nonce: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["validate-config", path.to_str().unwrap()])
            .env("PC_TEST_HS_SECRET", hs)
            .env("PC_TEST_NONCE", nonce)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, stdout) = validate(&"h".repeat(47), "n");
    assert_eq!(code, Some(64), "{stdout}");
    assert!(
        stdout.contains(
            "providers[0].shared_secret: is 47 bytes; HS384 needs at least 48 (RFC 7518 §3.2)"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("providers[1].dpop.nonce_secret: is 1 bytes; at least 32 are required"),
        "{stdout}"
    );
    let (code, stdout) = validate(&"h".repeat(48), &"n".repeat(32));
    assert_eq!(code, Some(0), "{stdout}");
}

async fn introspection_server(up: &FakeUpstream) -> TestServer {
    let yaml = format!(
        "server: {{drain_seconds: 0}}
providers:
  - name: idp
    type: introspection
    endpoint: '{}'
    client_id: c
    client_secret: {{env: S}}
    upstream: {{timeout_seconds: 1}}",
        up.url("/introspect")
    );
    let secrets = portcullis::io::sources_with([("S".to_owned(), "x".to_owned())].into());
    TestServer::start_with(&yaml, secrets, portcullis::Clock::system())
        .await
        .ready()
        .await
}

#[tokio::test]
async fn introspection_time_claims_active_and_sub_are_typed() {
    let up = FakeUpstream::start().await;
    let server = introspection_server(&up).await;
    let cases = [
        (
            "string-exp",
            json!({"active": true, "sub": "a", "exp": "1"}),
        ),
        (
            "future-nbf",
            json!({"active": true, "sub": "a", "nbf": now() + 600}),
        ),
        (
            "string-nbf",
            json!({"active": true, "sub": "a", "nbf": "0"}),
        ),
        ("string-active", json!({"active": "true", "sub": "a"})),
        (
            "numeric-sub",
            json!({"active": true, "sub": 42, "client_id": "svc"}),
        ),
        (
            "control-sub",
            json!({"active": true, "sub": "a\u{1}b", "client_id": "svc"}),
        ),
    ];
    for (token, answer) in &cases {
        up.answer(&format!("introspect:{token}"), 200, answer.clone());
    }
    up.answer(
        "introspect:good",
        200,
        json!({"active": true, "sub": "a", "exp": now() + 600, "nbf": now() - 5}),
    );
    ok(&server.check_bearer("good").await);
    for (token, _) in &cases {
        let r = server.check_bearer(token).await;
        assert_eq!(status(&r), 401, "{token}: {r:?}");
    }
}

#[tokio::test]
async fn an_unusable_sub_is_a_rejection_not_a_machine() {
    let idp = FakeIdp::start().await;
    let key = TestKey::ec("k");
    idp.set_keys(&[&key]);
    let yaml = format!(
        "server: {{drain_seconds: 0}}
providers:
  - {{name: corp, type: jwt, issuer: '{}', audiences: [api], algorithms: [ES256]}}",
        idp.issuer
    );
    let server = TestServer::start(&yaml).await.ready().await;
    for sub in [json!(42), json!("a\u{7f}b"), json!(""), json!(["a"])] {
        let mut c = claims(&idp.issuer, "api");
        c["sub"] = sub.clone();
        c["azp"] = json!("svc");
        let r = server.check_bearer(&key.token(&c)).await;
        assert_eq!(status(&r), 401, "sub {sub}: {r:?}");
    }
}

/// A loopback server that answers every request with a 307 to `location`.
async fn redirector(location: String) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(move || {
        let location = location.clone();
        async move {
            (
                axum::http::StatusCode::TEMPORARY_REDIRECT,
                [(axum::http::header::LOCATION, location)],
            )
        }
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

#[tokio::test]
async fn upstream_calls_never_follow_redirects() {
    let up = FakeUpstream::start().await;
    up.answer("introspect:t", 200, json!({"active": true, "sub": "a"}));
    up.answer("webhook:t", 200, json!({"principal": "a"}));
    let hop = redirector(up.url("/introspect")).await;
    let hook_hop = redirector(up.url("/webhook")).await;
    let yaml = format!(
        "server: {{drain_seconds: 0}}
providers:
  - name: idp
    type: introspection
    endpoint: 'http://{hop}/introspect'
    client_id: c
    client_secret: {{env: S}}
    upstream: {{timeout_seconds: 1}}
  - {{name: hook, type: webhook, endpoint: 'http://{hook_hop}/hook', credential: {{header: x-hook}}}}"
    );
    let secrets = portcullis::io::sources_with([("S".to_owned(), "secret".to_owned())].into());
    let server = TestServer::start_with(&yaml, secrets, portcullis::Clock::system())
        .await
        .ready()
        .await;
    let r = server.check_bearer("t").await;
    assert_eq!(status(&r), 503, "{r:?}");
    // The webhook reads a 3xx as a refusal: never an allow either way.
    let r = server.check(&[("x-hook", "t")]).await;
    assert!(matches!(status(&r), 401 | 503), "{r:?}");
    assert_eq!(up.hits(), 0, "the token and client secret were re-POSTed");
}

/// `@clients` marks a machine only where the provider says so: by default for an Auth0 issuer, never
/// for another issuer, where a person may be able to pick a name ending in `@clients`.
#[tokio::test]
async fn the_clients_suffix_makes_a_machine_only_where_the_provider_says_so() {
    let idp = FakeIdp::start().await;
    let key = TestKey::ec("k");
    idp.set_keys(&[&key]);
    let serve = |extra: &str| {
        format!(
            "server: {{drain_seconds: 0}}
providers:
  - {{name: corp, type: jwt, issuer: '{}', audiences: [api], algorithms: [ES256]{extra}}}",
            idp.issuer
        )
    };
    let mut c = claims(&idp.issuer, "api");
    c["sub"] = json!("bob@clients");
    c["azp"] = json!("spa");
    let token = key.token(&c);

    // A non-Auth0 issuer: `bob@clients` is a person.
    let server = TestServer::start(&serve("")).await.ready().await;
    let r = server.check_bearer(&token).await;
    // A machine principal gets `x-auth-client-id`; a person does not.
    assert_eq!(header(&ok(&r).headers, "x-auth-client-id"), None);
    drop(server);

    // The provider opts in (an Auth0 custom domain): a machine of client `spa`.
    let server = TestServer::start(&serve(", machine_subject_suffix: '@clients'"))
        .await
        .ready()
        .await;
    let r = server.check_bearer(&token).await;
    assert_eq!(header(&ok(&r).headers, "x-auth-client-id"), Some("spa"));
}

// === Guarantees a mutation test found unheld (issue 13): each test fails under the named bug. ===

/// Signs `header.claims` with RSASSA-PSS SHA-256 (PS256) using `key`'s private RSA key.
fn ps256_token(key: &TestKey, header: &Value, claims: &Value) -> String {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::RSA_PSS_SHA256;
    let TestKey::Rsa { pair, .. } = key else {
        panic!("PS256 needs an RSA key")
    };
    let message = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
    let mut sig = vec![0; pair.public_modulus_len()];
    pair.sign(
        &RSA_PSS_SHA256,
        &SystemRandom::new(),
        message.as_bytes(),
        &mut sig,
    )
    .unwrap();
    format!("{message}.{}", b64(sig))
}

/// Bug: the token's `alg` chooses among the provider's algorithms although the JWK names its own.
#[tokio::test]
async fn the_key_not_the_token_decides_the_algorithm() {
    let idp = FakeIdp::start().await;
    let key = TestKey::rsa("r");
    let mut jwk = key.jwk();
    jwk["alg"] = json!("RS256");
    idp.set_raw_keys(vec![jwk]);
    let yaml = format!(
        "server: {{drain_seconds: 0}}
providers:
  - {{name: corp, type: jwt, issuer: '{}', audiences: [api], algorithms: [RS256, PS256]}}",
        idp.issuer
    );
    let server = TestServer::start(&yaml).await.ready().await;
    let c = claims(&idp.issuer, "api");
    ok(&server.check_bearer(&key.token(&c)).await);
    let ps256 = ps256_token(&key, &json!({"alg": "PS256", "kid": "r"}), &c);
    let r = server.check_bearer(&ps256).await;
    assert_eq!(status(&r), 401, "a PS256 token under an RS256 key: {r:?}");
}

/// Bug: API keys compared on a prefix of their digest (or a digest parsed loosely).
#[tokio::test]
async fn an_api_key_one_hex_digit_off_is_refused() {
    let exact = portcullis::hash_key("valid-key");
    let flip = |c: char| if c == '0' { '1' } else { '0' };
    let last = exact.chars().last().unwrap();
    let off_last = format!("{}{}", &exact[..exact.len() - 1], flip(last));
    let prefix = "sha256:".len();
    let first = exact[prefix..].chars().next().unwrap();
    let off_first = format!("sha256:{}{}", flip(first), &exact[prefix + 1..]);
    for (digest, allowed) in [(&exact, true), (&off_last, false), (&off_first, false)] {
        let yaml = format!(
            "server: {{drain_seconds: 0}}
providers:
  - name: keys
    type: api_key
    credential: {{header: x-api-key}}
    keys: [{{sha256: '{digest}', principal: ci-bot}}]"
        );
        let server = TestServer::start(&yaml).await.ready().await;
        let r = server.check(&[("x-api-key", "valid-key")]).await;
        assert_eq!(status(&r) == 200, allowed, "digest {digest}: {r:?}");
    }
}

/// Bug: the on-demand refresh forgets that another caller already refreshed while it waited; with no
/// cooldown to hide it, 100 checks with a new kid would make 100 fetches.
#[tokio::test]
async fn unknown_kid_refreshes_are_single_flight_without_a_cooldown() {
    let idp = FakeIdp::start().await;
    let old = TestKey::ec("old");
    idp.set_keys(&[&old]);
    let yaml = format!(
        "server: {{drain_seconds: 0}}
providers:
  - name: corp
    type: jwt
    issuer: '{}'
    audiences: [api]
    algorithms: [ES256]
    jwks: {{unknown_kid_cooldown_seconds: 0}}",
        idp.issuer
    );
    let server = TestServer::start(&yaml).await.ready().await;
    let before = idp.jwks_hits();
    let new = TestKey::ec("new");
    idp.set_keys(&[&old, &new]);
    let auth = format!("Bearer {}", new.token(&claims(&idp.issuer, "api")));
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
    assert_eq!(idp.jwks_hits() - before, 1, "one fetch for 100 checks");
}

/// Bug: the verified-token cache keyed on header and payload only. A token with a cached token's header
/// and payload but another signature is judged on its own signature.
#[tokio::test]
async fn a_cached_tokens_header_and_payload_with_another_signature_is_denied() {
    let idp = FakeIdp::start().await;
    let key = TestKey::ec("k");
    idp.set_keys(&[&key]);
    let server = jwt_and_api_key(&idp, "").await;
    let valid = key.token(&claims(&idp.issuer, "api"));
    ok(&server.check_bearer(&valid).await);
    ok(&server.check_bearer(&valid).await); // now served from the cache
    let (head, signature) = valid.rsplit_once('.').unwrap();
    let mut bytes =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, signature)
            .unwrap();
    bytes[10] ^= 1;
    for forged in [format!("{head}.{}", b64(&bytes)), format!("{head}.AAAA")] {
        let r = server.check_bearer(&forged).await;
        assert_eq!(status(&r), 401, "{forged}: {r:?}");
    }
    ok(&server.check_bearer(&valid).await);
}
