//! Kubernetes identities over real gRPC and real TLS: the `kubernetes` provider against a fake API server
//! on loopback that answers TokenReview as the Kubernetes API documents it
//! (authentication.k8s.io/v1, `status.authenticated`, `status.user`, `status.audiences`), served over
//! HTTPS with a CA made at test time; per-provider `tls` (CA file, the dangerous skip) and a `jwt`
//! provider whose key set sits behind a bearer token read from a file that rotates.

use portcullis_test as common;

use std::sync::{Arc, Mutex};

use common::tls::{write_file, HttpsServer, TestCa, TlsRequest};
use common::*;
use serde_json::{json, Value};

/// An error answer (503, gRPC UNAVAILABLE): the check could not be decided; never an allow.
fn assert_unavailable(response: &portcullis::pb::auth::CheckResponse) {
    use portcullis::pb::auth::check_response::HttpResponse;
    assert_eq!(response.status.as_ref().unwrap().code, 14, "{response:?}");
    match &response.http_response {
        Some(HttpResponse::ErrorResponse(e)) => assert_eq!(e.status.as_ref().unwrap().code, 503),
        other => panic!("expected error_response, got {other:?}"),
    }
}

const SA: &str = "system:serviceaccount:payments:checkout";

/// A service-account-shaped token (a JWS; the API server, not portcullis, checks it).
fn sa_token(name: &str, exp: i64) -> String {
    format!(
        "{}.{}.{}",
        b64(r#"{"alg":"RS256","kid":"sa"}"#),
        b64(json!({"iss": "https://kubernetes.default.svc", "sub": name, "exp": exp}).to_string()),
        b64(name)
    )
}

/// The fake API server's state: which tokens are valid, and the bearer portcullis must present.
struct Cluster {
    valid: Mutex<Vec<(String, Value)>>,
    expected_bearer: Mutex<String>,
    fail: Mutex<bool>,
}

fn api_server(cluster: &Arc<Cluster>) -> common::tls::Handler {
    let cluster = Arc::clone(cluster);
    Arc::new(move |req: &TlsRequest| {
        if *cluster.fail.lock().unwrap() {
            return (500, "{}".into());
        }
        if req.method != "POST" || req.path != "/apis/authentication.k8s.io/v1/tokenreviews" {
            return (404, r#"{"kind":"Status","code":404}"#.into());
        }
        let bearer = format!("Bearer {}", cluster.expected_bearer.lock().unwrap());
        if req.headers.get("authorization") != Some(&bearer) {
            return (401, r#"{"kind":"Status","code":401}"#.into());
        }
        let review: Value = serde_json::from_str(&req.body).unwrap_or_default();
        let token = review["spec"]["token"].as_str().unwrap_or("");
        let asked: Vec<Value> = review["spec"]["audiences"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let status = match cluster
            .valid
            .lock()
            .unwrap()
            .iter()
            .find(|(t, _)| t == token)
        {
            Some((_, user)) => json!({
                "authenticated": true,
                "user": user,
                // The API server answers the audiences the token is valid for among those asked.
                "audiences": asked.iter().filter(|a| a.as_str() != Some("other")).collect::<Vec<_>>(),
            }),
            None => json!({"authenticated": false, "error": "invalid bearer token"}),
        };
        let answer = json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": review["spec"],
            "status": status,
        });
        (201, answer.to_string())
    })
}

fn sa_user() -> Value {
    json!({
        "username": SA,
        "uid": "7d2c-uid",
        "groups": ["system:serviceaccounts", "system:serviceaccounts:payments", "system:authenticated"],
    })
}

async fn cluster_with(valid: &[(&str, Value)]) -> (Arc<Cluster>, TestCa, HttpsServer) {
    let cluster = Arc::new(Cluster {
        valid: Mutex::new(
            valid
                .iter()
                .map(|(t, u)| (t.to_string(), u.clone()))
                .collect(),
        ),
        expected_bearer: Mutex::new("portcullis-sa-token-1".into()),
        fail: Mutex::new(false),
    });
    let ca = TestCa::new("test cluster CA");
    let server = HttpsServer::start(&ca, api_server(&cluster)).await;
    (cluster, ca, server)
}

fn kubernetes_yaml(server: &HttpsServer, tls: &str, token_file: &std::path::Path) -> String {
    format!(
        "
providers:
  - name: k8s
    type: kubernetes
    api_server: {}
    audiences: [portcullis]
    token: {{file: {}}}
    tls: {tls}
",
        server.url(""),
        token_file.display()
    )
}

#[tokio::test]
async fn service_accounts_are_checked_with_token_review() {
    let good = sa_token("checkout", now() + 3600);
    let (cluster, ca, api) = cluster_with(&[(&good, sa_user())]).await;
    let token_file = ca.dir.path().join("token");
    write_file(&token_file, "portcullis-sa-token-1\n");
    let tls = format!("{{ca_file: {}}}", ca.ca_file().display());
    let server = TestServer::start(&kubernetes_yaml(&api, &tls, &token_file)).await;

    let r = server.check_bearer(&good).await;
    let allowed = ok(&r);
    assert_eq!(header(&allowed.headers, "x-auth-subject"), Some(SA));
    assert_eq!(header(&allowed.headers, "x-auth-provider"), Some("k8s"));
    let groups = header(&allowed.headers, "x-auth-groups").unwrap();
    for g in ["system:serviceaccounts", "system:serviceaccounts:payments"] {
        assert!(groups.split(',').any(|x| x == g), "{groups}");
    }
    assert_eq!(
        header(&allowed.headers, "x-auth-issuer"),
        Some(api.url("").as_str())
    );

    // The review as the API documents it, with portcullis's own token and the audiences.
    let reviews = api.requests();
    assert_eq!(reviews.len(), 1);
    let body: Value = serde_json::from_str(&reviews[0].body).unwrap();
    assert_eq!(body["apiVersion"], "authentication.k8s.io/v1");
    assert_eq!(body["kind"], "TokenReview");
    assert_eq!(body["spec"]["token"], good.as_str());
    assert_eq!(body["spec"]["audiences"], json!(["portcullis"]));
    assert_eq!(
        reviews[0].headers.get("authorization").map(String::as_str),
        Some("Bearer portcullis-sa-token-1")
    );

    // Cached like introspection: the same token again asks nothing.
    ok(&server.check_bearer(&good).await);
    assert_eq!(api.requests().len(), 1);

    // An unknown token: `authenticated: false` is a 401.
    let forged = sa_token("intruder", now() + 3600);
    let r = server.check_bearer(&forged).await;
    assert_eq!(assert_invalid_token(&r, ""), "inactive_token");

    // portcullis's own token rotates: the next review reads the file again.
    write_file(&token_file, "portcullis-sa-token-2\n");
    *cluster.expected_bearer.lock().unwrap() = "portcullis-sa-token-2".into();
    let second = sa_token("checkout-2", now() + 3600);
    cluster
        .valid
        .lock()
        .unwrap()
        .push((second.clone(), sa_user()));
    ok(&server.check_bearer(&second).await);
    assert_eq!(
        api.requests()
            .last()
            .unwrap()
            .headers
            .get("authorization")
            .map(String::as_str),
        Some("Bearer portcullis-sa-token-2")
    );

    // An API server that fails is an error answer, never an allow.
    *cluster.fail.lock().unwrap() = true;
    let third = sa_token("checkout-3", now() + 3600);
    let r = server.check_bearer(&third).await;
    assert_unavailable(&r);
}

#[tokio::test]
async fn audiences_the_api_server_does_not_confirm_are_refused() {
    let good = sa_token("checkout", now() + 3600);
    let (_cluster, ca, api) = cluster_with(&[(&good, sa_user())]).await;
    let token_file = ca.dir.path().join("token");
    write_file(&token_file, "portcullis-sa-token-1");
    let yaml = kubernetes_yaml(
        &api,
        &format!("{{ca_file: {}}}", ca.ca_file().display()),
        &token_file,
    )
    .replace("audiences: [portcullis]", "audiences: [other]");
    let server = TestServer::start(&yaml).await;
    let r = server.check_bearer(&good).await;
    assert_eq!(assert_invalid_token(&r, ""), "wrong_aud");
}

#[tokio::test]
async fn an_api_server_outside_the_trusted_ca_is_never_trusted() {
    let good = sa_token("checkout", now() + 3600);
    let (_cluster, ca, api) = cluster_with(&[(&good, sa_user())]).await;
    let token_file = ca.dir.path().join("token");
    write_file(&token_file, "portcullis-sa-token-1");

    // Another CA than the server's: the handshake fails, the check is an error answer.
    let other = TestCa::new("another CA");
    let yaml = kubernetes_yaml(
        &api,
        &format!("{{ca_file: {}}}", other.ca_file().display()),
        &token_file,
    );
    let server = TestServer::start(&yaml).await;
    let r = server.check_bearer(&good).await;
    assert_unavailable(&r);
    assert!(
        api.requests().is_empty(),
        "no request crossed the handshake"
    );

    // The platform's roots do not know the test CA either.
    let yaml = kubernetes_yaml(&api, "{}", &token_file);
    let server = TestServer::start(&yaml).await;
    let r = server.check_bearer(&good).await;
    assert_unavailable(&r);

    // The dangerous switch accepts any certificate, and says so.
    let yaml = kubernetes_yaml(&api, "{insecure_skip_verify: true}", &token_file);
    let config = portcullis::Config::from_yaml_str(&yaml).unwrap();
    let warnings = config.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].path, "providers[0].tls.insecure_skip_verify");
    assert!(warnings[0].message.contains("DANGEROUS"));
    let server = TestServer::start(&yaml).await;
    ok(&server.check_bearer(&good).await);

    // Both at once is refused with its path.
    let yaml = kubernetes_yaml(
        &api,
        &format!(
            "{{ca_file: {}, insecure_skip_verify: true}}",
            ca.ca_file().display()
        ),
        &token_file,
    );
    let problems = portcullis::Config::from_yaml_str(&yaml).unwrap_err().0;
    assert_eq!(problems[0].path, "providers[0].tls", "{problems:?}");
}

#[tokio::test]
async fn a_missing_pod_token_fails_at_start_with_its_path() {
    let (_cluster, ca, api) = cluster_with(&[]).await;
    let yaml = kubernetes_yaml(
        &api,
        &format!("{{ca_file: {}}}", ca.ca_file().display()),
        &ca.dir.path().join("absent"),
    );
    let config = portcullis::Config::from_yaml_str(&yaml).unwrap();
    let err = portcullis::Runtime::build(
        &config,
        &portcullis::io::env(
            portcullis::Clock::system(),
            portcullis::io::sources_with(Default::default()),
        ),
    )
    .err()
    .expect("a missing token file is refused");
    assert_eq!(err.0[0].path, "providers[0].token", "{:?}", err.0);
}

#[tokio::test]
async fn a_jwks_behind_the_api_server_is_fetched_with_a_rotating_bearer_token() {
    let first = TestKey::rsa("k1");
    let second = TestKey::rsa("k2");
    // The key set is served only to the current bearer token; after rotation it also has the second key.
    let state = Arc::new(Mutex::new(("sa-token-1".to_owned(), vec![first.jwk()])));
    let handler_state = Arc::clone(&state);
    let ca = TestCa::new("kube CA");
    let api = HttpsServer::start(
        &ca,
        Arc::new(move |req: &TlsRequest| {
            let (bearer, keys) = handler_state.lock().unwrap().clone();
            if req.headers.get("authorization") != Some(&format!("Bearer {bearer}")) {
                return (401, "{}".into());
            }
            (200, json!({ "keys": keys }).to_string())
        }),
    )
    .await;
    let token_file = ca.dir.path().join("token");
    write_file(&token_file, "sa-token-1\n");
    let issuer = "https://kubernetes.default.svc";
    let yaml = format!(
        "
providers:
  - name: cluster
    type: jwt
    issuer: {issuer}
    audiences: [portcullis]
    jwks_uri: {}
    jwks: {{token: {{file: {}}}}}
    tls: {{ca_file: {}}}
",
        api.url("/openid/v1/jwks"),
        token_file.display(),
        ca.ca_file().display()
    );
    let server = TestServer::start(&yaml).await.ready().await;
    let r = server
        .check_bearer(&first.token(&claims(issuer, "portcullis")))
        .await;
    assert_eq!(header(&ok(&r).headers, "x-auth-provider"), Some("cluster"));

    // The token rotates and a new signing key appears: the refresh reads the new token.
    write_file(&token_file, "sa-token-2\n");
    *state.lock().unwrap() = ("sa-token-2".into(), vec![first.jwk(), second.jwk()]);
    ok(&server
        .check_bearer(&second.token(&claims(issuer, "portcullis")))
        .await);
    let last = api.requests().last().cloned().unwrap();
    assert_eq!(
        last.headers.get("authorization").map(String::as_str),
        Some("Bearer sa-token-2")
    );

    // A token without jwks_uri would go to a discovered URL: refused with its path.
    let yaml = format!(
        "
providers:
  - name: cluster
    type: jwt
    issuer: {issuer}
    audiences: [portcullis]
    jwks: {{token: {{file: {}}}}}
",
        token_file.display()
    );
    let problems = portcullis::Config::from_yaml_str(&yaml).unwrap_err().0;
    assert_eq!(problems[0].path, "providers[0].jwks.token", "{problems:?}");
}

#[test]
fn validate_config_warns_about_the_dangerous_skip() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.yaml");
    std::fs::write(
        &file,
        "
providers:
  - name: cluster
    type: jwt
    issuer: https://kubernetes.default.svc
    audiences: [portcullis]
    jwks_uri: https://kubernetes.default.svc/openid/v1/jwks
    tls: {insecure_skip_verify: true}
",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["validate-config", "--skip-secrets"])
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("warning: providers[0].tls.insecure_skip_verify: DANGEROUS"),
        "{stderr}"
    );
}
