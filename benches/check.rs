//! The Check path, measured. `cargo bench --bench check` (see BENCHMARKS.md).
//!
//! - `decide/*`: the decision alone (credential parsing, JWT verification or cache hit).
//! - `check/*`: the whole in-process Check: the CheckRequest's bytes → our view → decision → CheckResponse.
//! - `grpc/*`: a real gRPC call over loopback to a running server, one at a time and 64 concurrent.

use portcullis_test as common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{self, ParsedPublicKey};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::{claims, request, TestKey, TestServer};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use portcullis::server::App;
use portcullis::server::CheckService;
use portcullis::Clock;
use portcullis::{Config, Runtime};
use portcullis::{Headers, RequestView};
use prost::Message as _;
use serde_json::json;

const ISS: &str = "https://bench.example/";
const AUD: &str = "https://api.example.com/";

struct Fixture {
    _dir: tempfile::TempDir,
    yaml_cached: String,
    yaml_uncached: String,
    keys: Vec<TestKey>,
}

fn fixture() -> Fixture {
    let keys = vec![TestKey::rsa("rsa"), TestKey::ec("ec"), TestKey::ed("ed")];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    let jwks = json!({"keys": keys.iter().map(TestKey::jwk).collect::<Vec<_>>()});
    std::fs::write(&path, jwks.to_string()).unwrap();
    let yaml = |entries: u64| {
        format!(
            "server: {{drain_seconds: 0}}
providers:
  - name: bench
    type: jwt
    issuer: '{ISS}'
    audiences: ['{AUD}']
    algorithms: [RS256, ES256, EdDSA]
    jwks_file: '{}'
    claim_headers: {{email: x-auth-email}}
    cache: {{max_entries: {entries}}}",
            path.display()
        )
    };
    Fixture {
        yaml_cached: yaml(10_000),
        yaml_uncached: yaml(0),
        keys,
        _dir: dir,
    }
}

/// A realistic access token: Auth0-like claims with permissions and a namespaced claim.
fn token(key: &TestKey) -> String {
    let mut c = claims(ISS, AUD);
    c["email"] = json!("alice@example.com");
    c["permissions"] = json!(["read:portfolio", "write:strategy", "deploy:strategy"]);
    c["https://example.com/roles"] = json!(["trader"]);
    c["azp"] = json!("f3Kd9sQ2abcdefghijklmnop");
    key.token(&c)
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

/// `key`'s public half, parsed for its JWS algorithm.
fn public_key(key: &TestKey) -> ParsedPublicKey {
    use aws_lc_rs::signature::KeyPair as _;
    let (algorithm, bytes): (&'static dyn signature::VerificationAlgorithm, &[u8]) = match key {
        TestKey::Rsa { pair, .. } => (
            &signature::RSA_PKCS1_2048_8192_SHA256,
            pair.public_key().as_ref(),
        ),
        TestKey::Ec { pair, .. } => (
            &signature::ECDSA_P256_SHA256_FIXED,
            pair.public_key().as_ref(),
        ),
        TestKey::Ed { pair, .. } => (&signature::ED25519, pair.public_key().as_ref()),
    };
    ParsedPublicKey::new(algorithm, bytes).unwrap()
}

fn bench_decide(c: &mut Criterion) {
    let f = fixture();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("decide");
    let cached = runtime(&f.yaml_cached);
    let uncached = runtime(&f.yaml_uncached);
    for key in &f.keys {
        let auth = format!("Bearer {}", token(key));
        let pairs = [("authorization", auth.as_str())];
        let view = RequestView::new(
            "GET",
            "/api/items",
            "api.example.com",
            Headers::Pairs(&pairs),
            "",
        );
        // The signature check alone, with a key parsed once, as the `jwt` provider holds it: the floor
        // of an uncached decision (`verify` / `bare_signature` is the overhead ratio BENCHMARKS.md quotes).
        let (message, signature) = auth["Bearer ".len()..].rsplit_once('.').unwrap();
        let signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
        let parsed = public_key(key);
        group.bench_function(BenchmarkId::new("bare_signature", key.alg()), |b| {
            b.iter(|| {
                parsed
                    .verify_sig(message.as_bytes(), &signature)
                    .expect("the token's own signature")
            });
        });
        group.bench_with_input(BenchmarkId::new("verify", key.alg()), &view, |b, view| {
            b.to_async(&rt).iter(|| uncached.decide(view, false));
        });
        group.bench_with_input(
            BenchmarkId::new("cache_hit", key.alg()),
            &view,
            |b, view| {
                b.to_async(&rt).iter(|| cached.decide(view, false));
            },
        );
    }
    let view = RequestView::new("GET", "/", "h", Headers::Pairs(&[]), "");
    group.bench_function("deny_missing_token", |b| {
        b.to_async(&rt).iter(|| cached.decide(&view, false))
    });
    group.finish();
}

fn bench_check(c: &mut Criterion) {
    let f = fixture();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("check");
    for (name, yaml) in [("cache_hit", &f.yaml_cached), ("verify", &f.yaml_uncached)] {
        let config = Config::from_yaml_str(yaml).unwrap();
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
        let auth = format!("Bearer {}", token(&f.keys[0]));
        let message = bytes::Bytes::from(
            request(&[
                ("authorization", &auth),
                ("x-auth-subject", "mallory"),
                ("user-agent", "bench/1.0"),
                ("accept", "application/json"),
                ("x-request-id", "7f1c2c1e-2f8b-4c1e-9a51-1a2b3c4d5e6f"),
            ])
            .encode_to_vec(),
        );
        group.bench_function(BenchmarkId::new(name, "RS256"), |b| {
            b.to_async(&rt)
                .iter(|| service.check(tonic::Request::new(message.clone())));
        });
    }
    group.finish();
}

fn bench_grpc(c: &mut Criterion) {
    let f = fixture();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = rt.block_on(async { TestServer::start(&f.yaml_cached).await.ready().await });
    let auth = format!("Bearer {}", token(&f.keys[0]));
    let req = request(&[("authorization", &auth)]);
    let client = rt.block_on(server.client());

    let mut group = c.benchmark_group("grpc");
    group.bench_function("sequential_cache_hit", |b| {
        b.to_async(&rt).iter(|| {
            let mut client = client.clone();
            let req = req.clone();
            async move { client.check(req).await.unwrap() }
        });
    });
    const CONCURRENT: u64 = 64;
    group.throughput(Throughput::Elements(CONCURRENT));
    group.bench_function("concurrent_64_cache_hit", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let client = client.clone();
            let req = req.clone();
            async move {
                let start = Instant::now();
                for _ in 0..iters {
                    let calls = (0..CONCURRENT).map(|_| {
                        let mut client = client.clone();
                        let req = req.clone();
                        tokio::spawn(async move { client.check(req).await.unwrap() })
                    });
                    for call in calls.collect::<Vec<_>>() {
                        call.await.unwrap();
                    }
                }
                start.elapsed()
            }
        });
    });
    group.finish();
    drop(server);
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench_decide, bench_check, bench_grpc
}
criterion_main!(benches);
