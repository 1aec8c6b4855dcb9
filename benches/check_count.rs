//! Instructions per Check, for callgrind (see BENCHMARKS.md). Not a criterion bench: it runs N whole
//! in-process Checks of one kind, each reading the `CheckRequest` from its bytes as the server does
//! (`server/wire.rs`) and encoding the `CheckResponse` as the transport would, inside one function
//! callgrind is told to count:
//!
//! ```sh
//! cargo bench --no-run --bench check_count
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='check_count::measured::{{closure}}' \
//!     target/release/deps/check_count-HASH cache_hit 2000
//! ```
//!
//! Kinds: `noop` (a prost decode, a no-op server's answer, encode: the no-op server's floor), `cache_hit`, `verify` (RS256, cache
//! off), `bad_repeat` (one bad-signature token sent again and again), `bad_distinct` (a new bad-signature
//! token each time). Divide the counted instructions by N.

use portcullis_test as common;

use std::sync::Arc;

use bytes::Bytes;

use common::{claims, request, TestKey};
use portcullis::pb::auth::{check_response, CheckRequest, CheckResponse, OkHttpResponse};
use portcullis::server::{App, CheckService};
use portcullis::{Clock, Config};
use prost::Message as _;
use serde_json::json;

const ISS: &str = "https://bench.example/";
const AUD: &str = "https://api.example.com/";

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let kind = args.next().unwrap_or_else(|| "cache_hit".into());
    let n: usize = args.next().map_or(1000, |n| n.parse().expect("N"));

    let key = TestKey::rsa("rsa");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, json!({"keys": [key.jwk()]}).to_string()).unwrap();
    let entries = if kind == "verify" { 0 } else { 10_000 };
    let yaml = format!(
        "server: {{drain_seconds: 0}}
providers:
  - name: bench
    type: jwt
    issuer: '{ISS}'
    audiences: ['{AUD}']
    algorithms: [RS256]
    jwks_file: '{}'
    claim_headers: {{email: x-auth-email}}
    cache: {{max_entries: {entries}}}",
        path.display()
    );
    let config = Config::from_yaml_str(&yaml).unwrap();
    let service = CheckService::new(Arc::new(
        App::new(
            &config,
            None,
            portcullis::io::sources_with(Default::default()),
            Clock::system(),
        )
        .unwrap(),
    ));

    let mut c = claims(ISS, AUD);
    c["email"] = json!("alice@example.com");
    c["permissions"] = json!(["read:portfolio", "write:strategy", "deploy:strategy"]);
    c["https://example.com/roles"] = json!(["trader"]);
    c["azp"] = json!("f3Kd9sQ2abcdefghijklmnop");
    let good = key.token(&c);
    // A bad signature: the valid token with its last 8 signature characters replaced by `i` in hex-like
    // base64url digits, so each `i` is a distinct token.
    let bad = |i: usize| {
        let digits: String = (0..8)
            .map(|k| char::from(b"ABCDEFGHIJKLMNOP"[(i >> (4 * k)) & 15]))
            .collect();
        format!("{}{digits}", &good[..good.len() - 8])
    };
    let tokens: Vec<String> = match kind.as_str() {
        "bad_distinct" => (0..n + 1).map(bad).collect(),
        "bad_repeat" => vec![bad(1)],
        _ => vec![good],
    };
    let bodies: Vec<Bytes> = tokens
        .iter()
        .map(|t| {
            request(&[
                ("authorization", &format!("Bearer {t}")),
                ("x-auth-subject", "mallory"),
                ("user-agent", "bench/1.0"),
                ("accept", "application/json"),
                ("x-request-id", "7f1c2c1e-2f8b-4c1e-9a51-1a2b3c4d5e6f"),
            ])
            .encode_to_vec()
            .into()
        })
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Warm: the first check fills the token cache, lazy statics, the key set.
    let warm = rt.block_on(one(&service, &bodies[0], kind == "noop"));
    let expect_allow = !kind.starts_with("bad");
    assert_eq!(warm.1, expect_allow, "unexpected decision for {kind}");
    let bytes = measured(&rt, &service, &bodies, n, kind == "noop");
    println!(
        "{kind}: {n} checks, response {} bytes, {bytes} bytes encoded in all",
        warm.0
    );
}

#[inline(never)]
fn measured(
    rt: &tokio::runtime::Runtime,
    service: &CheckService,
    bodies: &[Bytes],
    n: usize,
    noop: bool,
) -> usize {
    rt.block_on(async {
        let mut total = 0;
        for i in 0..n {
            let body = &bodies[(i + 1) % bodies.len()];
            total += one(service, body, noop).await.0;
        }
        total
    })
}

/// One Check as the server runs it: read, decide and answer, encode. Returns the encoded size and
/// whether it allowed.
async fn one(service: &CheckService, body: &Bytes, noop: bool) -> (usize, bool) {
    let response = if noop {
        let request = CheckRequest::decode(body.as_ref()).unwrap();
        std::hint::black_box(&request);
        CheckResponse {
            status: Some(Default::default()),
            http_response: Some(check_response::HttpResponse::OkResponse(
                OkHttpResponse::default(),
            )),
            ..Default::default()
        }
    } else {
        service
            .check(tonic::Request::new(body.clone()))
            .await
            .unwrap()
            .into_inner()
    };
    let allowed = response.status.as_ref().is_some_and(|s| s.code == 0);
    let encoded = response.encode_to_vec();
    (encoded.len(), allowed)
}
