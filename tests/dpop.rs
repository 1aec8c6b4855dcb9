//! DPoP (RFC 9449) over real gRPC: tokens bound with `cnf.jkt` and proofs made at test time, against a
//! fake IdP on loopback.

use portcullis_test as common;

use common::*;
use portcullis::pb::auth::CheckResponse;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

const URI: &str = "https://api.example.com/api/items";

/// A client's DPoP key.
struct Holder {
    key: TestKey,
}

impl Holder {
    fn ec() -> Holder {
        Holder {
            key: TestKey::ec("unused"),
        }
    }

    fn public_jwk(&self) -> Value {
        let mut jwk = self.key.jwk();
        jwk.as_object_mut().unwrap().remove("kid");
        jwk.as_object_mut().unwrap().remove("use");
        jwk
    }

    /// RFC 7638 thumbprint of the public key.
    fn jkt(&self) -> String {
        let jwk = self.public_jwk();
        let canonical = format!(
            r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
            jwk["crv"].as_str().unwrap(),
            jwk["x"].as_str().unwrap(),
            jwk["y"].as_str().unwrap()
        );
        b64(Sha256::digest(canonical.as_bytes()))
    }

    fn claims(method: &str, uri: &str, token: &str) -> Value {
        json!({
            "jti": format!("{}-{}", now(), rand_id()),
            "htm": method, "htu": uri, "iat": now(),
            "ath": b64(Sha256::digest(token.as_bytes())),
        })
    }

    fn header(&self) -> Value {
        json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.public_jwk()})
    }

    fn proof(&self, method: &str, uri: &str, token: &str) -> String {
        self.key
            .token_with_header(&self.header(), &Holder::claims(method, uri, token))
    }

    fn proof_with(&self, header: Value, claims: Value) -> String {
        self.key.token_with_header(&header, &claims)
    }
}

fn rand_id() -> String {
    let mut bytes = [0u8; 12];
    aws_lc_rs::rand::fill(&mut bytes).unwrap();
    b64(bytes)
}

struct Setup {
    _idp: FakeIdp,
    idp_key: TestKey,
    issuer: String,
    server: TestServer,
    /// The configuration served.
    yaml: String,
}

async fn setup(dpop: &str, extra: &str) -> Setup {
    setup_with(
        dpop,
        extra,
        portcullis::io::sources_with(Default::default()),
    )
    .await
}

async fn setup_with(dpop: &str, extra: &str, secrets: portcullis::Sources) -> Setup {
    let idp = FakeIdp::start().await;
    let idp_key = TestKey::ec("idp");
    idp.set_keys(&[&idp_key]);
    let yaml = format!(
        "server: {{drain_seconds: 0}}
providers:
  - name: auth0
    type: jwt
    issuer: {}
    audiences: [https://api.example.com/]
    jwks_uri: {}
    algorithms: [ES256]
    {dpop}
{extra}",
        idp.issuer,
        idp.jwks_uri()
    );
    let server = TestServer::start_with(&yaml, secrets, portcullis::Clock::system())
        .await
        .ready()
        .await;
    Setup {
        issuer: idp.issuer.clone(),
        _idp: idp,
        idp_key,
        server,
        yaml,
    }
}

impl Setup {
    fn token(&self, jkt: Option<&str>) -> String {
        let mut claims = claims(&self.issuer, "https://api.example.com/");
        if let Some(jkt) = jkt {
            claims["cnf"] = json!({"jkt": jkt});
        }
        self.idp_key.token(&claims)
    }

    async fn send(&self, method: &str, headers: &[(&str, &str)]) -> CheckResponse {
        let mut req = request_to(method, "/api/items?x=1", headers);
        http_of(&mut req).scheme = "https".into();
        self.server.send(req).await
    }

    async fn dpop(&self, token: &str, proof: &str) -> CheckResponse {
        let auth = format!("DPoP {token}");
        self.send("GET", &[("authorization", &auth), ("dpop", proof)])
            .await
    }
}

/// A 401 with `error` in a `DPoP` challenge and the deny label `reason`; returns the challenge.
fn refused(response: &CheckResponse, error: &str, reason: &str) -> String {
    let status = response.status.as_ref().unwrap();
    assert_eq!(status.code, 16, "UNAUTHENTICATED: {response:?}");
    assert_eq!(status.message, reason, "{response:?}");
    let d = denied(response);
    assert_eq!(d.status.as_ref().unwrap().code, 401);
    let challenge = header(&d.headers, "www-authenticate").unwrap().to_owned();
    assert!(challenge.starts_with("DPoP "), "{challenge}");
    assert!(
        challenge.contains(&format!("error=\"{error}\"")),
        "{challenge}"
    );
    challenge
}

const OPTIONAL: &str = "dpop: {mode: optional, algorithms: [ES256, EdDSA, PS256]}";

#[tokio::test]
async fn a_valid_proof_is_allowed_once_and_its_replay_refused() {
    let s = setup(OPTIONAL, "").await;
    let holder = Holder::ec();
    let token = s.token(Some(&holder.jkt()));
    let proof = holder.proof("GET", URI, &token);
    let response = s.dpop(&token, &proof).await;
    assert_eq!(
        header(&ok(&response).headers, "x-auth-subject"),
        Some("user-1")
    );

    let replay = s.dpop(&token, &proof).await;
    let challenge = refused(&replay, "invalid_dpop_proof", "dpop_proof_replayed");
    assert!(
        challenge.contains("algs=\"ES256 EdDSA PS256\""),
        "{challenge}"
    );

    // A fresh proof for the same token passes again (and comes from the verified-token cache).
    let again = s.dpop(&token, &holder.proof("GET", URI, &token)).await;
    ok(&again);
}

#[tokio::test]
async fn a_proof_seen_before_a_reload_is_a_replay_after_it() {
    let s = setup(OPTIONAL, "").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("portcullis.yaml");
    std::fs::write(&path, &s.yaml).unwrap();
    let reloader = portcullis::server::Reloader::new(
        std::sync::Arc::clone(&s.server.app),
        &path,
        portcullis::Config::from_yaml_str(&s.yaml).unwrap(),
        portcullis::io::sources_with(Default::default()),
        portcullis::Clock::system(),
    );
    let holder = Holder::ec();
    let token = s.token(Some(&holder.jkt()));
    let proof = holder.proof("GET", URI, &token);
    ok(&s.dpop(&token, &proof).await);

    // A reload that leaves the providers alone keeps the replay records with them.
    let extra = "routes:\n  - {name: extra, match: {path_prefix: /extra}}\n";
    std::fs::write(&path, format!("{}\n{extra}", s.yaml)).unwrap();
    reloader.reload("test").await.unwrap();
    refused(
        &s.dpop(&token, &proof).await,
        "invalid_dpop_proof",
        "dpop_proof_replayed",
    );
    ok(&s.dpop(&token, &holder.proof("GET", URI, &token)).await);
}

#[tokio::test]
async fn a_bound_token_is_refused_as_bearer_and_without_a_proof_even_when_cached() {
    let s = setup(OPTIONAL, "").await;
    let holder = Holder::ec();
    let token = s.token(Some(&holder.jkt()));
    // Cached by a first, proven request.
    ok(&s.dpop(&token, &holder.proof("GET", URI, &token)).await);

    let bearer = format!("Bearer {token}");
    let downgrade = s.send("GET", &[("authorization", &bearer)]).await;
    refused(&downgrade, "invalid_token", "dpop_bearer_downgrade");
    // Even with a valid proof beside it, the Bearer scheme is not DPoP.
    let proof = holder.proof("GET", URI, &token);
    let downgrade = s
        .send("GET", &[("authorization", &bearer), ("dpop", &proof)])
        .await;
    refused(&downgrade, "invalid_token", "dpop_bearer_downgrade");

    let auth = format!("DPoP {token}");
    let no_proof = s.send("GET", &[("authorization", &auth)]).await;
    refused(&no_proof, "invalid_dpop_proof", "dpop_proof_missing");

    // An unbound token may still use Bearer in optional mode.
    ok(&s.server.check_bearer(&s.token(None)).await);
}

#[tokio::test]
async fn each_failed_proof_check_is_refused_with_its_reason() {
    let s = setup(OPTIONAL, "").await;
    let holder = Holder::ec();
    let token = s.token(Some(&holder.jkt()));
    let claims = || Holder::claims("GET", URI, &token);
    let header = || holder.header();
    let with_header = |f: &dyn Fn(&mut Value)| {
        let mut h = header();
        f(&mut h);
        holder.proof_with(h, claims())
    };
    let with_claims = |f: &dyn Fn(&mut Value)| {
        let mut c = claims();
        f(&mut c);
        holder.proof_with(header(), c)
    };
    let other = Holder::ec();
    let cases: Vec<(&str, String)> = vec![
        ("dpop_proof_typ", with_header(&|h| h["typ"] = json!("JWT"))),
        (
            "dpop_proof_alg",
            with_header(&|h| h["alg"] = json!("ES384")),
        ),
        (
            "dpop_proof_alg",
            with_header(&|h| h["alg"] = json!("HS256")),
        ),
        (
            "dpop_proof_key",
            with_header(&|h| h["jwk"]["d"] = json!("AAAA")),
        ),
        (
            "dpop_proof_key",
            with_header(&|h| {
                h.as_object_mut().unwrap().remove("jwk");
            }),
        ),
        // Signed by another key than the one in its header.
        ("dpop_proof_signature", other.proof_with(header(), claims())),
        ("dpop_proof_htm", with_claims(&|c| c["htm"] = json!("POST"))),
        (
            "dpop_proof_htu",
            with_claims(&|c| c["htu"] = json!("https://api.example.com/api/other")),
        ),
        (
            "dpop_proof_htu",
            with_claims(&|c| c["htu"] = json!("https://evil.example.com/api/items")),
        ),
        (
            "dpop_proof_iat",
            with_claims(&|c| c["iat"] = json!(now() - 301)),
        ),
        (
            "dpop_proof_iat",
            with_claims(&|c| c["iat"] = json!(now() + 120)),
        ),
        (
            "dpop_proof_ath",
            with_claims(&|c| c["ath"] = json!(b64(Sha256::digest(b"another token")))),
        ),
        (
            "dpop_proof_malformed",
            with_claims(&|c| {
                c.as_object_mut().unwrap().remove("jti");
            }),
        ),
        ("dpop_proof_malformed", "not-a-jwt".to_owned()),
        // A proof of another key: the token is bound to `holder`'s.
        ("dpop_key_mismatch", other.proof("GET", URI, &token)),
    ];
    for (reason, proof) in cases {
        let response = s.dpop(&token, &proof).await;
        refused(&response, "invalid_dpop_proof", reason);
    }

    // Two DPoP headers (Envoy joins them with `,`).
    let auth = format!("DPoP {token}");
    let (a, b) = (
        holder.proof("GET", URI, &token),
        holder.proof("GET", URI, &token),
    );
    let twice = s
        .send(
            "GET",
            &[("authorization", &auth), ("dpop", &a), ("dpop", &b)],
        )
        .await;
    refused(&twice, "invalid_dpop_proof", "dpop_proof_malformed");

    // The method is the request's.
    let post = s
        .send(
            "POST",
            &[
                ("authorization", &auth),
                ("dpop", &holder.proof("GET", URI, &token)),
            ],
        )
        .await;
    refused(&post, "invalid_dpop_proof", "dpop_proof_htm");

    // Equivalent URIs (RFC 3986 §6.2.2–6.2.3) are the same htu.
    let equivalent = holder.proof(
        "GET",
        "HTTPS://API.example.com:443/api/./items?q=1#f",
        &token,
    );
    ok(&s.dpop(&token, &equivalent).await);

    // The DPoP scheme with a token that is not bound.
    let unbound = s.token(None);
    let response = s.dpop(&unbound, &holder.proof("GET", URI, &unbound)).await;
    refused(&response, "invalid_token", "dpop_token_unbound");
}

#[tokio::test]
async fn required_mode_refuses_unbound_tokens_and_off_mode_the_scheme() {
    let s = setup("dpop: {mode: required}", "").await;
    let refusal = s.server.check_bearer(&s.token(None)).await;
    refused(&refusal, "invalid_token", "dpop_required");
    let holder = Holder::ec();
    let token = s.token(Some(&holder.jkt()));
    ok(&s.dpop(&token, &holder.proof("GET", URI, &token)).await);

    let s = setup("dpop: {mode: off}", "").await;
    let token = s.token(Some(&holder.jkt()));
    let response = s.dpop(&token, &holder.proof("GET", URI, &token)).await;
    refused(&response, "invalid_token", "dpop_scheme_refused");
    ok(&s.server.check_bearer(&s.token(None)).await);
}

#[tokio::test]
async fn the_htu_may_be_the_external_origin() {
    let s = setup("dpop: {external_origin: 'https://public.example.com'}", "").await;
    let holder = Holder::ec();
    let token = s.token(Some(&holder.jkt()));
    let inner = holder.proof("GET", URI, &token);
    refused(
        &s.dpop(&token, &inner).await,
        "invalid_dpop_proof",
        "dpop_proof_htu",
    );
    let public = holder.proof("GET", "https://public.example.com/api/items", &token);
    ok(&s.dpop(&token, &public).await);
}

#[tokio::test]
async fn nonces_are_required_then_accepted_by_every_replica() {
    let secrets =
        || portcullis::io::sources_with([("DPOP_NONCE".to_owned(), "n".repeat(32))].into());
    let dpop = "dpop: {nonce: true, nonce_secret: {env: DPOP_NONCE}}";
    let a = setup_with(dpop, "", secrets()).await;
    let holder = Holder::ec();
    let token = a.token(Some(&holder.jkt()));
    let first = a.dpop(&token, &holder.proof("GET", URI, &token)).await;
    refused(&first, "use_dpop_nonce", "dpop_nonce");
    let nonce = header(&denied(&first).headers, "dpop-nonce")
        .expect("a fresh DPoP-Nonce")
        .to_owned();

    let with_nonce = || {
        let mut claims = Holder::claims("GET", URI, &token);
        claims["nonce"] = json!(nonce);
        holder.proof_with(holder.header(), claims)
    };
    ok(&a.dpop(&token, &with_nonce()).await);

    // Another replica (same secret, its own process state) takes the nonce too.
    let b = setup_with(dpop, "", secrets()).await;
    let token_b = b.token(Some(&holder.jkt()));
    let mut claims = Holder::claims("GET", URI, &token_b);
    claims["nonce"] = json!(nonce);
    ok(&b
        .dpop(&token_b, &holder.proof_with(holder.header(), claims))
        .await);

    // A made-up nonce is not ours.
    let mut claims = Holder::claims("GET", URI, &token);
    claims["nonce"] = json!("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    let response = a
        .dpop(&token, &holder.proof_with(holder.header(), claims))
        .await;
    refused(&response, "use_dpop_nonce", "dpop_nonce");
}

// --- Delegation (RFC 8693), audiences (RFC 8707) and resource metadata (RFC 9728) over gRPC. ---

const POLICY: &str = "
resources:
  - resource: https://api.example.com/mcp/data
    authorization_servers: [https://idp.example.com/]
    scopes_supported: [read:data]
    dpop_bound_access_tokens_required: true
routes:
  - name: kill-switch
    match: {path: /kill}
    require: {dpop: true}
  - name: mcp-data
    match: {path_prefix: /mcp/data}
    resource: https://api.example.com/mcp/data
    require:
      audience: https://api.example.com/mcp/data
      delegation: {allow: true, max_depth: 1, actors: [agent-broker@clients], max_lifetime_seconds: 300, forbid_permissions: [machine]}
";

async fn send_to(s: &Setup, path: &str, headers: &[(&str, &str)]) -> CheckResponse {
    let mut req = request_to("GET", path, headers);
    http_of(&mut req).scheme = "https".into();
    s.server.send(req).await
}

fn agent_claims(s: &Setup, lifetime: i64) -> Value {
    let mut c = claims(&s.issuer, "https://api.example.com/");
    c["aud"] = json!([
        "https://api.example.com/",
        "https://api.example.com/mcp/data"
    ]);
    c["exp"] = json!(c["iat"].as_i64().unwrap() + lifetime);
    c["act"] = json!({"sub": "agent-broker@clients"});
    c["permissions"] = json!(["read:data"]);
    c
}

#[tokio::test]
async fn delegated_tokens_follow_the_route_rules_and_name_the_actor_upstream() {
    let s = setup(OPTIONAL, POLICY).await;
    let bearer = |c: &Value| format!("Bearer {}", s.idp_key.token(c));

    let agent = agent_claims(&s, 300);
    let response = send_to(&s, "/mcp/data/x", &[("authorization", &bearer(&agent))]).await;
    let headers = &ok(&response).headers;
    assert_eq!(header(headers, "x-auth-subject"), Some("user-1"));
    assert_eq!(
        header(headers, "x-auth-actor"),
        Some("agent-broker@clients")
    );
    assert_eq!(
        header(headers, "x-auth-delegation-chain"),
        Some("agent-broker@clients")
    );
    let metadata = response.dynamic_metadata.as_ref().unwrap();
    let chain = format!("{:?}", metadata.fields["delegation_chain"]);
    assert!(chain.contains("agent-broker@clients"), "{chain}");

    // A client cannot smuggle an actor header.
    let response = send_to(
        &s,
        "/mcp/data/x",
        &[
            ("authorization", &bearer(&claims_with_aud(&s))),
            ("x-auth-actor", "root"),
        ],
    )
    .await;
    let ok_response = ok(&response);
    assert_eq!(header(&ok_response.headers, "x-auth-actor"), None);
    assert!(ok_response
        .headers_to_remove
        .contains(&"x-auth-actor".to_owned()));

    let refusals: Vec<(&str, Value)> = vec![
        ("delegation_too_long", agent_claims(&s, 301)),
        ("actor_not_allowed", {
            let mut c = agent_claims(&s, 300);
            c["act"] = json!({"sub": "rogue@clients"});
            c
        }),
        ("delegation_too_deep", {
            let mut c = agent_claims(&s, 300);
            c["act"] =
                json!({"sub": "agent-broker@clients", "act": {"sub": "agent-broker@clients"}});
            c
        }),
        ("delegated_permission_forbidden", {
            let mut c = agent_claims(&s, 300);
            c["permissions"] = json!(["read:data", "machine"]);
            c
        }),
    ];
    for (reason, c) in refusals {
        let response = send_to(&s, "/mcp/data/x", &[("authorization", &bearer(&c))]).await;
        assert_eq!(response.status.as_ref().unwrap().message, reason);
        assert_eq!(denied(&response).status.as_ref().unwrap().code, 403);
    }
    // The default route does not allow delegation at all.
    let response = send_to(&s, "/other", &[("authorization", &bearer(&agent))]).await;
    assert_eq!(
        response.status.as_ref().unwrap().message,
        "delegation_not_allowed"
    );
    assert_eq!(denied(&response).status.as_ref().unwrap().code, 403);
}

fn claims_with_aud(s: &Setup) -> Value {
    let mut c = claims(&s.issuer, "https://api.example.com/");
    c["aud"] = json!([
        "https://api.example.com/",
        "https://api.example.com/mcp/data"
    ]);
    c
}

#[tokio::test]
async fn the_route_audience_is_strict_and_its_401_points_to_the_metadata() {
    let s = setup(OPTIONAL, POLICY).await;
    // The provider accepts the token's audience, the route wants its own resource: 401, not 403.
    let token = s.token(None);
    let auth = format!("Bearer {token}");
    let response = send_to(&s, "/mcp/data/x", &[("authorization", &auth)]).await;
    assert_eq!(
        response.status.as_ref().unwrap().message,
        "audience_mismatch"
    );
    let d = denied(&response);
    assert_eq!(d.status.as_ref().unwrap().code, 401);
    let challenge = header(&d.headers, "www-authenticate").unwrap();
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    assert!(
        challenge.contains(
            "resource_metadata=\"https://api.example.com/.well-known/oauth-protected-resource/mcp/data\""
        ),
        "{challenge}"
    );
    // No credential: the plain challenge names the metadata too (how an MCP client discovers the IdP).
    let response = send_to(&s, "/mcp/data/x", &[]).await;
    let challenge = header(&denied(&response).headers, "www-authenticate").unwrap();
    assert!(challenge.contains("resource_metadata="), "{challenge}");
    // Routes without a resource carry no such parameter.
    let response = send_to(&s, "/other", &[]).await;
    let challenge = header(&denied(&response).headers, "www-authenticate").unwrap();
    assert!(!challenge.contains("resource_metadata"), "{challenge}");

    let token = s.idp_key.token(&claims_with_aud(&s));
    let auth = format!("Bearer {token}");
    ok(&send_to(&s, "/mcp/data/x", &[("authorization", &auth)]).await);
}

#[tokio::test]
async fn the_metadata_document_is_served_without_a_token() {
    let s = setup(OPTIONAL, POLICY).await;
    let expected = json!({
        "resource": "https://api.example.com/mcp/data",
        "authorization_servers": ["https://idp.example.com/"],
        "scopes_supported": ["read:data"],
        "bearer_methods_supported": ["header"],
        "dpop_bound_access_tokens_required": true,
    });
    let response = send_to(&s, "/.well-known/oauth-protected-resource/mcp/data", &[]).await;
    let d = denied(&response);
    assert_eq!(d.status.as_ref().unwrap().code, 200);
    assert_eq!(header(&d.headers, "content-type"), Some("application/json"));
    assert_eq!(serde_json::from_str::<Value>(&d.body).unwrap(), expected);

    let admin = reqwest::get(format!(
        "http://{}/.well-known/oauth-protected-resource/mcp/data",
        s.server.admin
    ))
    .await
    .unwrap();
    assert_eq!(admin.status(), 200);
    assert_eq!(admin.json::<Value>().await.unwrap(), expected);
    let missing = reqwest::get(format!(
        "http://{}/.well-known/oauth-protected-resource/nope",
        s.server.admin
    ))
    .await
    .unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn a_dpop_route_takes_only_proven_bound_tokens() {
    let s = setup(OPTIONAL, POLICY).await;
    let unbound = format!("Bearer {}", s.token(None));
    let response = send_to(&s, "/kill", &[("authorization", &unbound)]).await;
    assert_eq!(response.status.as_ref().unwrap().message, "dpop_required");
    assert_eq!(denied(&response).status.as_ref().unwrap().code, 401);
    let challenge = header(&denied(&response).headers, "www-authenticate").unwrap();
    assert!(
        challenge.starts_with("DPoP realm=") && challenge.contains("error=\"invalid_token\""),
        "{challenge}"
    );

    let holder = Holder::ec();
    let token = s.token(Some(&holder.jkt()));
    let auth = format!("DPoP {token}");
    let proof = holder.proof("GET", "https://api.example.com/kill", &token);
    ok(&send_to(&s, "/kill", &[("authorization", &auth), ("dpop", &proof)]).await);
    // The same bound token, now cached, without its proof.
    let response = send_to(&s, "/kill", &[("authorization", &auth)]).await;
    refused(&response, "invalid_dpop_proof", "dpop_proof_missing");
}

/// An introspected (opaque) token bound by the introspection answer's `cnf.jkt`.
#[tokio::test]
async fn an_introspection_answer_binds_the_token_too() {
    use common::upstream::FakeUpstream;
    let up = FakeUpstream::start().await;
    let holder = Holder::ec();
    up.answer(
        "introspect:opaque-bound",
        200,
        json!({"active": true, "sub": "alice", "exp": now() + 600, "cnf": {"jkt": holder.jkt()}}),
    );
    let yaml = format!(
        "server: {{drain_seconds: 0}}
providers:
  - name: idp
    type: introspection
    endpoint: {}
    client_id: portcullis
    client_secret: {{env: INTROSPECTION_SECRET}}
    dpop: {{mode: optional}}
",
        up.url("/introspect")
    );
    let secrets =
        portcullis::io::sources_with([("INTROSPECTION_SECRET".to_owned(), "s".to_owned())].into());
    let server = TestServer::start_with(&yaml, secrets, portcullis::Clock::system()).await;
    let send = |headers: Vec<(String, String)>| {
        let server = &server;
        async move {
            let pairs: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let mut req = request_to("GET", "/api/items", &pairs);
            http_of(&mut req).scheme = "https".into();
            server.send(req).await
        }
    };
    let token = "opaque-bound";
    let proof = holder.proof("GET", URI, token);
    let dpop = vec![
        ("authorization".to_owned(), format!("DPoP {token}")),
        ("dpop".to_owned(), proof.clone()),
    ];
    ok(&send(dpop.clone()).await);
    refused(
        &send(dpop).await,
        "invalid_dpop_proof",
        "dpop_proof_replayed",
    );
    let bearer = vec![("authorization".to_owned(), format!("Bearer {token}"))];
    refused(
        &send(bearer).await,
        "invalid_token",
        "dpop_bearer_downgrade",
    );
}

/// Issue 28 finding 9: a reload that changes `replay_cache_entries` or raises `max_age_seconds` never lets
/// a proof seen before it be replayed: the new cache consults the old one, and a proof issued before the
/// reload keeps the old (shorter) window its record was made for.
#[tokio::test]
async fn a_reload_that_resizes_the_cache_or_widens_the_window_lets_no_replay_through() {
    let idp = FakeIdp::start().await;
    let idp_key = TestKey::ec("idp");
    idp.set_keys(&[&idp_key]);
    let yaml = |dpop: &str| {
        format!(
            "server: {{drain_seconds: 0}}
providers:
  - name: auth0
    type: jwt
    issuer: {}
    audiences: [https://api.example.com/]
    jwks_uri: {}
    algorithms: [ES256]
    dpop: {dpop}
",
            idp.issuer,
            idp.jwks_uri()
        )
    };
    let before = yaml("{mode: optional, max_age_seconds: 60}");
    let t0 = now();
    let clock = portcullis::Clock::manual(t0);
    let secrets = portcullis::io::sources_with(Default::default());
    let server = TestServer::start_with(&before, secrets.clone(), clock.clone())
        .await
        .ready()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("portcullis.yaml");
    std::fs::write(&path, &before).unwrap();
    let reloader = portcullis::server::Reloader::new(
        std::sync::Arc::clone(&server.app),
        &path,
        portcullis::Config::from_yaml_str(&before).unwrap(),
        secrets,
        clock.clone(),
    );
    let send = |token: String, proof: String| {
        let server = &server;
        async move {
            let auth = format!("DPoP {token}");
            let mut req = request_to(
                "GET",
                "/api/items?x=1",
                &[("authorization", &auth), ("dpop", &proof)],
            );
            http_of(&mut req).scheme = "https".into();
            server.send(req).await
        }
    };
    let holder = Holder::ec();
    let mut claims = claims(&idp.issuer, "https://api.example.com/");
    claims["cnf"] = json!({"jkt": holder.jkt()});
    let token = idp_key.token(&claims);
    // Made at t0 by the server's clock, and one dated 20 s ahead (within the proofs' future leeway).
    let dated = |iat: i64| {
        let mut claims = Holder::claims("GET", URI, &token);
        claims["iat"] = json!(iat);
        holder.proof_with(holder.header(), claims)
    };
    let proof = dated(t0);
    let ahead = dated(t0 + 20);
    ok(&send(token.clone(), proof.clone()).await);
    ok(&send(token.clone(), ahead.clone()).await);

    std::fs::write(
        &path,
        yaml("{mode: optional, max_age_seconds: 600, replay_cache_entries: 5000}"),
    )
    .unwrap();
    reloader.reload("test").await.unwrap();
    refused(
        &send(token.clone(), proof.clone()).await,
        "invalid_dpop_proof",
        "dpop_proof_replayed",
    );
    // Once the old window has passed, the old record may be gone: the proof is still refused, as too
    // old for the window it was recorded under (from the very second its record expires).
    clock.set(t0 + 60);
    refused(
        &send(token.clone(), proof.clone()).await,
        "invalid_dpop_proof",
        "dpop_proof_iat",
    );
    clock.set(t0 + 80);
    refused(
        &send(token.clone(), ahead.clone()).await,
        "invalid_dpop_proof",
        "dpop_proof_iat",
    );
    clock.set(t0 + 61);
    // A proof made after the reload has the new window.
    let mut fresh = Holder::claims("GET", URI, &token);
    fresh["iat"] = json!(t0 + 61);
    ok(&send(token.clone(), holder.proof_with(holder.header(), fresh)).await);
}
