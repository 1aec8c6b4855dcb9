//! The signed identity token: minted on allow, verified here with `jsonwebtoken` against the key set the
//! admin port serves, a client-sent copy overwritten, per-route audiences, reuse for a cached identity,
//! and rotation with overlap through the injectable clock.

use portcullis_test as common;

use std::path::Path;

use common::*;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use portcullis::Clock;
use serde_json::{json, Value};

const AUD: &str = "https://api.example.com/";
const ISSUER: &str = "https://portcullis.internal";

fn config(idp: &FakeIdp, state: &Path, extra_token: &str, routes: &str) -> String {
    format!(
        "
server:
  drain_seconds: 0
providers:
  - name: test-idp
    type: jwt
    issuer: {iss}
    audiences: [{AUD}]
    algorithms: [ES256]
identity_token:
  issuer: {ISSUER}
  audience: orders-service
  ttl_seconds: 60
  state_dir: '{state}'
  claims: [sub, scope, permissions, org_id]
  {extra_token}
{routes}
",
        iss = idp.issuer,
        state = state.display()
    )
}

async fn fetch(url: &str) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

/// Verifies `token` against the key set the admin port serves: signature, `iss`, `aud`, `exp`.
async fn verify(server: &TestServer, token: &str, audience: &str) -> Value {
    let discovery = fetch(&format!(
        "http://{}/.well-known/openid-configuration",
        server.admin
    ))
    .await;
    assert_eq!(discovery["issuer"], ISSUER);
    let jwks_uri = discovery["jwks_uri"].as_str().unwrap();
    assert_eq!(
        jwks_uri,
        format!("http://{}/.well-known/jwks.json", server.admin)
    );
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(fetch(jwks_uri).await).unwrap();
    let header = decode_header(token).unwrap();
    assert_eq!(header.alg, Algorithm::ES256);
    assert_eq!(header.typ.as_deref(), Some("JWT"));
    let kid = header.kid.expect("a kid");
    let jwk = jwks.find(&kid).expect("the kid is published");
    let key = DecodingKey::from_jwk(jwk).unwrap();
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_issuer(&[ISSUER]);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    decode::<Value>(token, &key, &validation).unwrap().claims
}

fn token_of(response: &portcullis::pb::auth::CheckResponse) -> Option<String> {
    header(&ok(response).headers, "x-auth-identity").map(str::to_owned)
}

#[tokio::test]
async fn the_upstream_can_verify_the_token_against_the_admin_key_set() {
    let idp = FakeIdp::start().await;
    let key = TestKey::ec("ec-1");
    idp.set_keys(&[&key]);
    let state = tempfile::tempdir().unwrap();
    let routes = "
routes:
  - name: billing
    match: {path_prefix: /billing}
    identity_token: {audience: billing-service}
  - name: public
    match: {path_prefix: /public}
    identity_token: false
";
    let server = TestServer::start(&config(&idp, state.path(), "", routes))
        .await
        .ready()
        .await;
    let mut claims = claims(&idp.issuer, AUD);
    claims["org_id"] = json!("org_1");
    claims["permissions"] = json!(["read:orders"]);
    claims["email"] = json!("ada@example.com");
    let bearer = format!("Bearer {}", key.token(&claims));

    // A client-sent copy never survives: ours overwrites it.
    let forged = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.";
    let response = server
        .check(&[("authorization", &bearer), ("x-auth-identity", forged)])
        .await;
    let token = token_of(&response).expect("an identity token");
    assert_ne!(token, forged);
    assert!(!ok(&response)
        .headers_to_remove
        .iter()
        .any(|h| h == "x-auth-identity"));
    let got = verify(&server, &token, "orders-service").await;
    assert_eq!(got["sub"], "user-1");
    assert_eq!(got["provider"], "test-idp");
    assert_eq!(got["route"], "default");
    assert_eq!(got["scope"], "read:data write:data");
    assert_eq!(got["org_id"], "org_1");
    assert_eq!(got["permissions"], json!(["read:orders"]));
    assert!(got.get("email").is_none(), "only the listed claims");
    assert_eq!(
        Some(got["decision_id"].as_str().unwrap()),
        header(&ok(&response).headers, "x-auth-decision-id")
    );
    let exp = got["exp"].as_i64().unwrap();
    assert_eq!(exp - got["iat"].as_i64().unwrap(), 60);

    // A token for one audience does not verify for another.
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(
        fetch(&format!("http://{}/.well-known/jwks.json", server.admin)).await,
    )
    .unwrap();
    let kid = decode_header(&token).unwrap().kid.unwrap();
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&["billing-service"]);
    assert!(decode::<Value>(
        &token,
        &DecodingKey::from_jwk(jwks.find(&kid).unwrap()).unwrap(),
        &validation
    )
    .is_err());

    // The same cached identity gets the same token back (more than half its lifetime left).
    let again = server.check(&[("authorization", &bearer)]).await;
    assert_eq!(token_of(&again).as_deref(), Some(token.as_str()));

    // Another route, another audience.
    let billing = server
        .send(request_to(
            "GET",
            "/billing/x",
            &[("authorization", &bearer)],
        ))
        .await;
    let billing_token = token_of(&billing).unwrap();
    let got = verify(&server, &billing_token, "billing-service").await;
    assert_eq!(got["route"], "billing");
    // Counted: two signatures (default route, billing), one reuse.
    let metrics = server.metrics().await;
    assert!(
        metrics
            .contains("\nportcullis_cache_hits_total{cache=\"identity_token\",provider=\"\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "\nportcullis_cache_misses_total{cache=\"identity_token\",provider=\"\"} 2\n"
        ),
        "{metrics}"
    );

    // Off on a route: no token, and a client's copy is not passed on. (It is under the `x-auth-` prefix,
    // so it is removed with the other identity headers.)
    let public = server
        .send(request_to(
            "GET",
            "/public/x",
            &[("authorization", &bearer), ("x-auth-identity", forged)],
        ))
        .await;
    assert_eq!(token_of(&public), None);
    assert!(ok(&public)
        .headers_to_remove
        .iter()
        .any(|h| h == "x-auth-identity"));
}

#[tokio::test]
async fn a_header_outside_the_prefix_is_still_never_passed_from_the_client() {
    let idp = FakeIdp::start().await;
    let key = TestKey::ec("ec-1");
    idp.set_keys(&[&key]);
    let state = tempfile::tempdir().unwrap();
    let routes = "
routes:
  - name: public
    match: {path_prefix: /public}
    identity_token: false
";
    let yaml = config(&idp, state.path(), "header: x-identity-token", routes);
    let server = TestServer::start(&yaml).await.ready().await;
    let bearer = format!("Bearer {}", key.token(&claims(&idp.issuer, AUD)));
    let public = server
        .send(request_to(
            "GET",
            "/public/x",
            &[("authorization", &bearer), ("x-identity-token", "forged")],
        ))
        .await;
    assert_eq!(header(&ok(&public).headers, "x-identity-token"), None);
    assert!(ok(&public)
        .headers_to_remove
        .iter()
        .any(|h| h == "x-identity-token"));
    let allowed = server
        .check(&[("authorization", &bearer), ("x-identity-token", "forged")])
        .await;
    let token = header(&ok(&allowed).headers, "x-identity-token").unwrap();
    assert_ne!(token, "forged");
    // Issue 28 finding 13: the underscore spelling (`HTTP_X_IDENTITY_TOKEN` to a CGI-style upstream) goes
    // too, whether the token is set (allow) or not (a route without it).
    for path in ["/x", "/public/x"] {
        let answer = server
            .send(request_to(
                "GET",
                path,
                &[
                    ("authorization", &bearer),
                    ("x_identity_token", "forged"),
                    ("X_Identity-Token", "forged"),
                ],
            ))
            .await;
        let removed = &ok(&answer).headers_to_remove;
        for spelling in ["x_identity_token", "x_identity-token"] {
            assert!(removed.iter().any(|h| h == spelling), "{path}: {removed:?}");
        }
    }
}

#[tokio::test]
async fn tokens_are_resigned_past_half_their_lifetime_and_keys_rotate_with_overlap() {
    let idp = FakeIdp::start().await;
    let key = TestKey::ec("ec-1");
    idp.set_keys(&[&key]);
    let state = tempfile::tempdir().unwrap();
    let start = now();
    let clock = Clock::manual(start);
    let yaml = config(
        &idp,
        state.path(),
        "rotation: {every_seconds: 600, publish_ahead_seconds: 120}",
        "",
    );
    let server = TestServer::start_with(
        &yaml,
        portcullis::io::sources_with(Default::default()),
        clock.clone(),
    )
    .await
    .ready()
    .await;
    let mut claims = claims(&idp.issuer, AUD);
    claims["exp"] = json!(start + 7200);
    let bearer = format!("Bearer {}", key.token(&claims));
    let kids = || async {
        let jwks = fetch(&format!("http://{}/.well-known/jwks.json", server.admin)).await;
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let signed = |response: &portcullis::pb::auth::CheckResponse| {
        let token = token_of(response).unwrap();
        let kid = decode_header(&token).unwrap().kid.unwrap();
        (token, kid)
    };

    let (first, old_kid) = signed(&server.check(&[("authorization", &bearer)]).await);
    assert_eq!(kids().await, vec![old_kid.clone()]);
    // 30 s of 60 left is not more than half: a new token.
    clock.set(start + 29);
    let (reused, _) = signed(&server.check(&[("authorization", &bearer)]).await);
    assert_eq!(reused, first);
    clock.set(start + 30);
    let (fresh, _) = signed(&server.check(&[("authorization", &bearer)]).await);
    assert_ne!(fresh, first);

    // Rotation: the new key is published at once but does not sign yet.
    clock.set(start + 600);
    let published = kids().await;
    assert_eq!(published.len(), 2);
    assert_eq!(published[0], old_kid);
    let new_kid = published[1].clone();
    let (_, kid) = signed(&server.check(&[("authorization", &bearer)]).await);
    assert_eq!(kid, old_kid, "a new key must be published before it signs");

    // publish_ahead later the new key signs; the old one stays published while its tokens live.
    clock.set(start + 720);
    let (_, kid) = signed(&server.check(&[("authorization", &bearer)]).await);
    assert_eq!(kid, new_kid);
    clock.set(start + 779);
    assert_eq!(kids().await, [old_kid.clone(), new_kid.clone()]);
    clock.set(start + 780);
    assert_eq!(kids().await, vec![new_kid.clone()]);
}

#[tokio::test]
async fn without_the_section_the_endpoints_are_absent() {
    let idp = FakeIdp::start().await;
    let yaml = format!(
        "
server:
  drain_seconds: 0
providers:
  - name: test-idp
    type: jwt
    issuer: {}
    audiences: [{AUD}]
",
        idp.issuer
    );
    let server = TestServer::start(&yaml).await;
    for path in ["jwks.json", "openid-configuration"] {
        let status = reqwest::get(format!("http://{}/.well-known/{path}", server.admin))
            .await
            .unwrap()
            .status();
        assert_eq!(status, 404);
    }
}

#[test]
fn configuration_problems_name_their_fields() {
    let yaml = "
providers:
  - name: a
    type: jwt
    issuer: https://idp.example.com/
    audiences: [api]
identity_token:
  header: X-Bad
  issuer: ''
  audience: svc
  algorithm: RS256
  ttl_seconds: 0
  claims: [sub, password]
routes:
  - name: r
    match: {path: /r}
    identity_token: {audience: ''}
";
    let err = portcullis::Config::from_yaml_str(yaml).unwrap_err();
    let paths: Vec<&str> = err.0.iter().map(|p| p.path.as_str()).collect();
    for want in [
        "identity_token.header",
        "identity_token.issuer",
        "identity_token.ttl_seconds",
        "identity_token.algorithm",
        "identity_token.claims[1]",
        "routes[0].identity_token.audience",
    ] {
        assert!(paths.contains(&want), "{want} in {paths:?}");
    }
    let without = "
providers:
  - name: a
    type: jwt
    issuer: https://idp.example.com/
    audiences: [api]
default_route:
  identity_token: true
";
    let err = portcullis::Config::from_yaml_str(without).unwrap_err();
    let paths: Vec<&str> = err.0.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["default_route.identity_token"]);
}
