//! Expressions and the identity token, measured. `cargo bench --bench policy`.
//!
//! - `expression/*`: one decision (JWT cache hit) on a route without a requirement, then with one CEL
//!   expression; the difference is the cost of evaluating the expression.
//! - `identity_token/*`: the whole in-process Check without the token, with a token reused for the cached
//!   identity, and signed on every request (the JWT cache off, so every identity is new: compare with
//!   `off_jwt_uncached`, which verifies the JWT on every request too).

use portcullis_test as common;

use std::sync::Arc;
use std::time::Duration;

use common::{claims, request, TestKey};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use portcullis::server::{App, CheckService};
use portcullis::{Clock, Config, Headers, RequestView, Runtime};
use prost::Message as _;
use serde_json::json;

const ISS: &str = "https://bench.example/";
const AUD: &str = "https://api.example.com/";

fn yaml(jwks: &std::path::Path, cache_entries: u64, extra: &str) -> String {
    format!(
        "server: {{drain_seconds: 0}}
providers:
  - name: bench
    type: jwt
    issuer: '{ISS}'
    audiences: ['{AUD}']
    algorithms: [ES256]
    jwks_file: '{}'
    cache: {{max_entries: {cache_entries}}}
{extra}",
        jwks.display()
    )
}

fn runtime(yaml: &str) -> Runtime {
    let config = Config::from_yaml_str(yaml).unwrap();
    Runtime::build(
        &config,
        &portcullis::io::env(
            Clock::system(),
            portcullis::io::sources_with(Default::default()),
        ),
    )
    .unwrap()
}

fn token(key: &TestKey) -> String {
    let mut c = claims(ISS, AUD);
    c["email"] = json!("alice@example.com");
    c["permissions"] = json!(["read:portfolio", "write:strategy"]);
    c["org_id"] = json!("org_1");
    key.token(&c)
}

fn bench_expression(c: &mut Criterion) {
    let key = TestKey::ec("ec");
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, json!({"keys": [key.jwk()]}).to_string()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let auth = format!("Bearer {}", token(&key));
    let pairs = [("authorization", auth.as_str()), ("x-tenant", "org_1")];
    let view = RequestView::new(
        "GET",
        "/orgs/org_1/items",
        "api.example.com",
        Headers::Pairs(&pairs),
        "",
    );
    let mut group = c.benchmark_group("expression");
    for (name, require) in [
        ("none", "{}"),
        ("email_domain", "{expression: \"claims.email.endsWith('@example.com')\"}"),
        (
            "scope_and_path_owner",
            "{expression: \"'read:data' in identity.scopes && request.path.startsWith('/orgs/' + identity.organization + '/')\"}",
        ),
        (
            "working_hours",
            "{expression: \"now.getHours('Europe/Berlin') >= 0 && now.getHours('Europe/Berlin') < 24\"}",
        ),
        (
            "header_matches_claim",
            "{expression: \"request.headers['x-tenant'] == claims.org_id\"}",
        ),
    ] {
        let extra = format!("default_route: {{require: {require}}}");
        let runtime = runtime(&yaml(&jwks, 10_000, &extra));
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                let verdict = runtime.decide(&view, false).await;
                assert_eq!(verdict.decision.kind(), "allow");
            })
        });
    }
    group.finish();
}

fn bench_identity_token(c: &mut Criterion) {
    let key = TestKey::ec("ec");
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, json!({"keys": [key.jwk()]}).to_string()).unwrap();
    let state = dir.path().join("state");
    let section = format!(
        "identity_token: {{issuer: 'https://portcullis.internal', audience: upstream, state_dir: '{}'}}",
        state.display()
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let auth = format!("Bearer {}", token(&key));
    let message = bytes::Bytes::from(
        request(&[("authorization", &auth), ("user-agent", "bench/1.0")]).encode_to_vec(),
    );
    let mut group = c.benchmark_group("identity_token");
    for (name, cache, extra) in [
        ("off", 10_000, ""),
        ("reused", 10_000, section.as_str()),
        ("off_jwt_uncached", 0, ""),
        ("signed_every_request", 0, section.as_str()),
    ] {
        let yaml = yaml(&jwks, cache, extra);
        let config = Config::from_yaml_str(&yaml).unwrap();
        let app = Arc::new(
            App::new(
                &config,
                None,
                portcullis::io::sources_with(Default::default()),
                Clock::system(),
            )
            .unwrap(),
        );
        let service = CheckService::new(app);
        group.bench_function(BenchmarkId::new("check", name), |b| {
            b.to_async(&rt)
                .iter(|| service.check(tonic::Request::new(message.clone())));
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench_expression, bench_identity_token
}
criterion_main!(benches);
