//! Drop-in for llama-stack: `portcullis import llama-stack` on configurations shaped like llama-stack's
//! documentation, served for real, with the same tokens run through llama-stack's semantics (a model of
//! `auth_providers.py` written here) and through portcullis; `accept_jwt` in the chain; llama-stack's
//! answer body.

use portcullis_test as common;

use std::collections::BTreeMap;
use std::process::Command;

use common::upstream::FakeUpstream;
use common::*;
use portcullis::pb::auth::CheckResponse;
use serde_json::{json, Value};

/// Runs `portcullis import llama-stack` on `yaml`: (exit code, stdout, stderr).
fn import(yaml: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("run.yaml");
    std::fs::write(&file, yaml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["import", "llama-stack"])
        .arg(&file)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn secrets(pairs: &[(&str, &str)]) -> portcullis::Sources {
    portcullis::io::sources_with(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// llama-stack's `get_attributes_from_claims`: a list stays a list, a string is split on spaces, several
/// claims may feed one attribute.
fn llama_attributes(claims: &Value, mapping: &[(&str, &str)]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (claim, attribute) in mapping {
        let values: Vec<String> = match &claims[*claim] {
            Value::Array(items) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            Value::String(s) => s.split_whitespace().map(str::to_owned).collect(),
            _ => continue,
        };
        out.entry(attribute.to_string()).or_default().extend(values);
    }
    out
}

/// What llama-stack answers: the principal and attributes, or `None` for a 401.
type LlamaAnswer = Option<(String, BTreeMap<String, Vec<String>>)>;

/// What portcullis answered, in the same terms (attributes read back from the `x-auth-*` headers).
fn portcullis_answer(response: &CheckResponse, attributes: &[&str]) -> LlamaAnswer {
    if response.status.as_ref().unwrap().code != 0 {
        assert_eq!(denied(response).status.as_ref().unwrap().code, 401);
        return None;
    }
    let headers = &ok(response).headers;
    let subject = header(headers, "x-auth-subject").unwrap().to_owned();
    let attrs = attributes
        .iter()
        .filter_map(|a| {
            let v = header(headers, &format!("x-auth-{a}"))?;
            Some((a.to_string(), v.split(',').map(str::to_owned).collect()))
        })
        .collect();
    Some((subject, attrs))
}

/// llama-stack's default claims_mapping for oauth2_token.
const OAUTH2_MAPPING: &[(&str, &str)] = &[
    ("sub", "roles"),
    ("username", "roles"),
    ("groups", "teams"),
    ("team", "teams"),
    ("project", "projects"),
    ("tenant", "namespaces"),
    ("namespace", "namespaces"),
];

fn sorted(mut answer: LlamaAnswer) -> LlamaAnswer {
    if let Some((_, attrs)) = &mut answer {
        for v in attrs.values_mut() {
            v.sort();
        }
    }
    answer
}

fn llama_body(response: &CheckResponse) -> Value {
    serde_json::from_str(&denied(response).body).unwrap()
}

#[tokio::test]
async fn oauth2_introspection_with_jwt_access_tokens_behaves_as_in_llama_stack() {
    let up = FakeUpstream::start().await;
    let run = format!(
        "
version: 2
image_name: keycloak
server:
  port: 8321
  auth:
    provider_config:
      type: oauth2_token
      introspection:
        url: {}
        client_id: llama-stack
        client_secret: ${{env.KEYCLOAK_CLIENT_SECRET}}
        send_secret_in_body: true
    access_policy:
      - permit: {{principal: alice, actions: [read]}}
",
        up.url("/introspect")
    );
    let (code, yaml, notes) = import(&run);
    assert_eq!(code, 0, "{notes}");
    assert!(yaml.contains("body: llama_stack"), "{yaml}");
    assert!(yaml.contains("accept_jwt: true"), "{yaml}");
    assert!(
        notes.contains("server.auth.access_policy: 1 rule(s) not carried over"),
        "{notes}"
    );
    let server = TestServer::start_with(
        &yaml,
        secrets(&[("KEYCLOAK_CLIENT_SECRET", "kc-secret")]),
        portcullis::Clock::system(),
    )
    .await;

    // Keycloak issues JWT access tokens and introspects them.
    let idp_key = TestKey::rsa("kc");
    let jwt = idp_key.token(&claims("https://keycloak.example/realms/llama", "account"));
    let introspected = json!({
        "active": true, "sub": "alice", "exp": now() + 600,
        "groups": ["ml-team", "admins"], "project": "p1 p2",
    });
    up.answer(&format!("introspect:{jwt}"), 200, introspected.clone());
    up.answer(
        "introspect:opaque-1",
        200,
        json!({"active": true, "username": "bob", "team": "infra", "exp": now() + 600}),
    );
    // llama-stack's introspect_token: `active` or 401; principal `sub or username`; claims_mapping.
    let llama = |fields: &Value| -> LlamaAnswer {
        if fields["active"] != json!(true) {
            return None;
        }
        let principal = fields["sub"]
            .as_str()
            .or(fields["username"].as_str())?
            .to_owned();
        Some((principal, llama_attributes(fields, OAUTH2_MAPPING)))
    };
    let attributes = ["roles", "teams", "projects", "namespaces"];
    for (token, fields) in [
        (jwt.as_str(), introspected),
        (
            "opaque-1",
            json!({"active": true, "username": "bob", "team": "infra"}),
        ),
        ("revoked", json!({"active": false})),
    ] {
        let r = server.check_bearer(token).await;
        assert_eq!(
            sorted(portcullis_answer(&r, &attributes)),
            sorted(llama(&fields)),
            "token {token}"
        );
    }
    // The secret went in the form body, as `send_secret_in_body: true` asks.
    let form = &up.captured()[0].body;
    assert!(
        form.contains("client_id=llama-stack") && form.contains("client_secret=kc-secret"),
        "{form}"
    );

    // A missing token: llama-stack's body and message, naming the introspection host.
    let r = server.check(&[]).await;
    assert_eq!(
        llama_body(&r),
        json!({"error": {"message": format!(
            "Authentication required. Please provide a valid OAuth2 Bearer token validated by {}",
            up.addr
        )}})
    );
    let r = server.check_bearer("revoked").await;
    assert!(llama_body(&r)["error"]["message"].is_string());
}

#[tokio::test]
async fn oauth2_jwks_for_a_kubernetes_issuer_behaves_as_in_llama_stack() {
    let idp = FakeIdp::start().await;
    let key = TestKey::rsa("sa-key");
    idp.set_keys(&[&key]);
    let run = format!(
        "
server:
  auth:
    provider_config:
      type: oauth2_token
      jwks:
        uri: {}
        key_recheck_period: 600
      issuer: {}
      audience: llama-stack
      claims_mapping:
        sub: roles
        groups: teams
",
        idp.jwks_uri(),
        idp.issuer
    );
    let (code, yaml, notes) = import(&run);
    assert_eq!(code, 0, "{notes}");
    let server = TestServer::start(&yaml).await.ready().await;
    let mapping = [("sub", "roles"), ("groups", "teams")];
    // llama-stack's validate_jwt_token: kid known, signature, `aud` and `iss` as configured, `exp`.
    let llama = |claims: &Value, signed_by_idp: bool| -> LlamaAnswer {
        let ok = signed_by_idp
            && claims["iss"] == json!(idp.issuer)
            && claims["aud"] == json!("llama-stack")
            && claims["exp"].as_i64().is_some_and(|e| e > now());
        ok.then(|| {
            (
                claims["sub"].as_str().unwrap().to_owned(),
                llama_attributes(claims, &mapping),
            )
        })
    };
    let base = |extra: Value| {
        let mut c = claims(&idp.issuer, "llama-stack");
        c["sub"] = json!("system:serviceaccount:ml:trainer");
        c["groups"] = json!(["system:serviceaccounts", "system:serviceaccounts:ml"]);
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let stranger = TestKey::rsa("sa-key");
    for (name, claims, signer) in [
        ("valid", base(json!({})), &key),
        ("wrong audience", base(json!({"aud": "other"})), &key),
        (
            "wrong issuer",
            base(json!({"iss": "https://elsewhere.example"})),
            &key,
        ),
        ("expired", base(json!({"exp": now() - 3600})), &key),
        ("forged", base(json!({})), &stranger),
    ] {
        let r = server.check_bearer(&signer.token(&claims)).await;
        assert_eq!(
            sorted(portcullis_answer(&r, &["roles", "teams"])),
            sorted(llama(&claims, std::ptr::eq(signer, &key))),
            "{name}"
        );
    }
    let r = server.check(&[]).await;
    assert_eq!(
        llama_body(&r),
        json!({"error": {"message": format!(
            "Authentication required. Please provide a valid OAuth2 Bearer token from {}",
            idp.issuer
        )}})
    );
}

#[tokio::test]
async fn custom_and_github_providers_convert_with_their_messages() {
    let up = FakeUpstream::start().await;
    let run = format!(
        "
server:
  auth:
    provider_config:
      type: custom
      endpoint: {}
",
        up.url("/webhook")
    );
    let (code, yaml, notes) = import(&run);
    assert_eq!(code, 0, "{notes}");
    let server = TestServer::start(&yaml).await;
    // llama-stack's custom provider sends every token, JWT-shaped ones included.
    let jwt = TestKey::rsa("x").token(&claims("https://any.example", "a"));
    up.answer(
        &format!("webhook:{jwt}"),
        200,
        json!({"principal": "carol", "attributes": {"roles": ["admin"]}}),
    );
    let r = server.check_bearer(&jwt).await;
    assert_eq!(header(&ok(&r).headers, "x-auth-subject"), Some("carol"));
    assert_eq!(header(&ok(&r).headers, "x-auth-roles"), Some("admin"));
    let r = server.check(&[]).await;
    assert_eq!(
        llama_body(&r),
        json!({"error": {"message": format!(
            "Authentication required. Please provide your API key as a Bearer token (validated by {})",
            up.addr
        )}})
    );

    let run = format!(
        "
server:
  auth:
    provider_config:
      type: github_token
      github_api_base_url: {}
",
        up.url("")
    );
    let (code, yaml, notes) = import(&run);
    assert_eq!(code, 0, "{notes}");
    let server = TestServer::start(&yaml).await;
    up.answer(
        "user:gho_abc",
        200,
        json!({"login": "octocat", "id": 583231}),
    );
    let r = server.check_bearer("gho_abc").await;
    assert_eq!(header(&ok(&r).headers, "x-auth-username"), Some("octocat"));
    assert_eq!(header(&ok(&r).headers, "x-auth-user_id"), Some("583231"));
    let r = server.check(&[]).await;
    assert_eq!(
        llama_body(&r),
        json!({"error": {"message": "Authentication required. Please provide a valid GitHub access token (https://docs.github.com/en/authentication/keeping-your-account-and-data-secure/managing-your-personal-access-tokens) in the Authorization header (Bearer <token>)"}})
    );
}

#[test]
fn what_cannot_be_converted_is_refused_with_its_path() {
    let (code, out, err) = import(
        "
server:
  auth:
    provider_config:
      type: oauth2_token
      jwks: {uri: 'https://idp.example/jwks'}
",
    );
    assert_eq!(code, 64);
    assert!(out.is_empty());
    assert!(
        err.contains("server.auth.provider_config.issuer: required by portcullis"),
        "{err}"
    );
    let (code, _, err) = import("server: {port: 8321}");
    assert_eq!(code, 64);
    assert!(err.contains("server.auth: not found"), "{err}");

    // A literal secret is never written out: it moves to a named environment variable.
    let (code, out, err) = import(
        "
server:
  auth:
    provider_config:
      type: oauth2_token
      introspection: {url: 'https://idp.example/introspect', client_id: c, client_secret: hunter2}
      verify_tls: false
",
    );
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("hunter2"), "{out}");
    assert!(
        out.contains("env: PORTCULLIS_INTROSPECTION_CLIENT_SECRET"),
        "{out}"
    );
    assert!(
        err.contains("PORTCULLIS_INTROSPECTION_CLIENT_SECRET"),
        "{err}"
    );
}

/// `accept_jwt`: a JWT goes to introspection only when no `jwt` provider of the route owns its issuer.
#[tokio::test]
async fn accept_jwt_takes_only_jwts_no_jwt_provider_owns() {
    let idp = FakeIdp::start().await;
    let key = TestKey::rsa("own");
    idp.set_keys(&[&key]);
    let up = FakeUpstream::start().await;
    let yaml = |accept: bool| {
        format!(
            "
providers:
  - {{name: auth0, type: jwt, issuer: '{}', audiences: [api]}}
  - name: keycloak
    type: introspection
    endpoint: {}
    client_id: portcullis
    client_secret: {{env: S}}
    accept_jwt: {accept}
",
            idp.issuer,
            up.url("/introspect")
        )
    };
    let server = TestServer::start_with(
        &yaml(true),
        secrets(&[("S", "s")]),
        portcullis::Clock::system(),
    )
    .await
    .ready()
    .await;

    // A token of the jwt provider's issuer stays there, even when it fails.
    let own = key.token(&claims(&idp.issuer, "api"));
    assert_eq!(
        header(
            &ok(&server.check_bearer(&own).await).headers,
            "x-auth-provider"
        ),
        Some("auth0")
    );
    let forged = TestKey::rsa("own").token(&claims(&idp.issuer, "api"));
    let r = server.check_bearer(&forged).await;
    assert_eq!(assert_invalid_token(&r, ""), "bad_signature");
    assert_eq!(
        up.hits(),
        0,
        "a token of an owned issuer never reaches introspection"
    );

    // Another issuer's JWT: the jwt provider declines it, introspection decides.
    let foreign = TestKey::rsa("kc").token(&claims("https://keycloak.example/realms/r", "x"));
    up.answer(
        &format!("introspect:{foreign}"),
        200,
        json!({"active": true, "sub": "dave", "exp": now() + 600}),
    );
    let r = server.check_bearer(&foreign).await;
    assert_eq!(header(&ok(&r).headers, "x-auth-provider"), Some("keycloak"));
    assert_eq!(up.hits(), 1);
    // Inactive: the 401 is introspection's, not the jwt provider's "untrusted issuer".
    let stale = TestKey::rsa("kc").token(&claims("https://keycloak.example/realms/r", "y"));
    let r = server.check_bearer(&stale).await;
    assert_eq!(assert_invalid_token(&r, ""), "inactive_token");

    // Without accept_jwt, a JWT never reaches introspection.
    let up_hits = up.hits();
    let server = TestServer::start_with(
        &yaml(false),
        secrets(&[("S", "s")]),
        portcullis::Clock::system(),
    )
    .await
    .ready()
    .await;
    let r = server.check_bearer(&foreign).await;
    assert_eq!(assert_invalid_token(&r, ""), "untrusted_iss");
    assert_eq!(up.hits(), up_hits);
}
