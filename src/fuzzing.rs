//! Thin entry points for the `cargo fuzz` targets in `fuzz/` (the `fuzzing` feature; not a public API).
//!
//! Each takes the fuzzer's bytes and drives one parser or the whole Check path exactly as the server
//! does; none of them may panic, whatever the bytes. Everything runs offline: the providers here need no
//! network (an HMAC shared secret, API keys, an anonymous identity).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use jsonwebtoken::Algorithm;
use prost::Message as _;

use crate::config::Config;
use crate::providers::jwks::{AlgSet, KeySet};
use crate::runtime::Runtime;
use crate::server::App;

/// The HMAC secret of the fuzzing config's `jwt` provider; [`sign_hs256`] signs with it, so a fuzzed
/// header and payload get past the signature and exercise the claim checks.
pub const SECRET: &str = "fuzzing-secret-fuzzing-secret-32b";
/// The fuzzing config's issuer and audience.
pub const ISSUER: &str = "https://fuzz.example/";
pub const AUDIENCE: &str = "api";
/// The API key the fuzzing config knows.
pub const API_KEY: &str = "fuzz-api-key";

/// A config with every offline provider and a policy that reads headers, scopes, claims and DPoP.
fn config_text() -> String {
    format!(
        "server: {{drain_seconds: 0, allow_explain: true}}
providers:
  - name: corp
    type: jwt
    issuer: '{ISSUER}'
    audiences: ['{AUDIENCE}']
    algorithms: [HS256]
    shared_secret: {{env: FUZZ_SECRET}}
    claim_headers: {{email: x-auth-email, groups: x-auth-groups}}
    claims_mapping: {{org: organization, permissions: permissions}}
    dpop: {{mode: optional, algorithms: [ES256, EdDSA, RS256, PS256]}}
  - name: keys
    type: api_key
    credential: {{header: x-api-key}}
    keys: [{{sha256: '{}', principal: ci-bot, attributes: {{team: [ops]}}}}]
  - {{name: guest, type: anonymous}}
routes:
  - name: admin
    match: {{path: /admin, methods: [POST]}}
    providers: [corp]
    require: {{scopes: {{all_of: [admin]}}}}
  - name: orgs
    match: {{path_prefix: /orgs/}}
    providers: [corp, keys]
    require: {{organization: {{from_header: x-org-id}}}}
  - name: bound
    match: {{path_prefix: /bound/}}
    providers: [corp]
    require: {{dpop: true}}
  - name: public
    match: {{path_prefix: /public/}}
    allow_anonymous: true
  - name: trial
    match: {{path_prefix: /trial/}}
    mode: permissive
    require: {{permissions: {{any_of: [read]}}}}
default_route: {{providers: [corp, keys]}}
",
        crate::providers::api_key::hash_key(API_KEY)
    )
}

struct Harness {
    tokio: tokio::runtime::Runtime,
    check: crate::server::CheckService,
    runtime: Arc<Runtime>,
    app: Arc<App>,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let config = Config::from_yaml_str(&config_text()).expect("the fuzzing config is valid");
        let secrets = crate::io::sources_with(HashMap::from([(
            "FUZZ_SECRET".to_owned(),
            SECRET.to_owned(),
        )]));
        let app = Arc::new(
            App::new(&config, None, secrets, crate::clock::Clock::system())
                .expect("the fuzzing config builds"),
        );
        Harness {
            tokio: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime"),
            check: crate::server::CheckService::new(Arc::clone(&app)),
            runtime: app.runtime(),
            app,
        }
    })
}

/// The whole Check path as the server runs it: protobuf bytes → our request view (`portcullis-proto/src/wire.rs`) →
/// decision → answer → `CheckResponse`. Returns whether the bytes decoded; bytes that do not are answered
/// `INTERNAL`, never allowed.
pub fn check_request(bytes: &[u8]) -> bool {
    let h = harness();
    let request = tonic::Request::new(bytes::Bytes::copy_from_slice(bytes));
    match h.tokio.block_on(h.check.check(request)) {
        // The answer must encode again (Envoy reads it).
        Ok(response) => {
            let _ = response.into_inner().encode_to_vec();
            true
        }
        Err(status) if status.code() == tonic::Code::Internal => false,
        Err(status) => panic!("Check failed at the gRPC level: {status:?}"),
    }
}

/// The request parser (`portcullis-proto/src/wire.rs`) against prost on the same bytes: wherever prost decodes, the
/// same view; wherever they disagree on accepting, only because of a field no check reads. Panics
/// otherwise. Returns whether prost decoded the bytes.
pub fn wire_request(bytes: &[u8]) -> bool {
    use crate::pb::wire::differential::{run, Agreement};
    run(bytes) == Agreement::Equal
}

/// A bearer token through the `jwt` provider's parsing and validation (and the rest of a check).
pub fn jwt_token(token: &str) {
    let _ = bearer_decision(token);
}

/// The decision on `GET /items` with `Authorization: Bearer <token>`.
fn bearer_decision(token: &str) -> crate::decision::Decision {
    let h = harness();
    let bearer = format!("Bearer {token}");
    let pairs = [("authorization", bearer.as_str())];
    let view = crate::request::RequestView::new(
        "GET",
        "/items",
        "api.example.com",
        crate::request::Headers::Pairs(&pairs),
        "fuzz",
    );
    h.tokio.block_on(h.runtime.decide(&view, false)).decision
}

/// An HS256 JWT with this header and payload (any bytes), signed with [`SECRET`].
pub fn sign_hs256(header: &[u8], payload: &[u8]) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, SECRET.as_bytes());
    let tag = aws_lc_rs::hmac::sign(&key, message.as_bytes());
    format!("{message}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

/// A JWKS document, with every algorithm allowed. Returns how many keys are usable.
pub fn jwks_document(bytes: &[u8]) -> usize {
    KeySet::from_jwks(bytes, AlgSet::PUBLIC_KEY).map_or(0, |keys| {
        let _ = keys.find(None);
        let _ = keys.find(Some("k"));
        keys.len()
    })
}

/// The config loader: YAML text → validated config, its warnings, and (for a valid one) the runtime
/// checks that need no files or network. Returns whether it loaded.
pub fn config_yaml(text: &str) -> bool {
    match Config::from_yaml_str(text) {
        Ok(config) => {
            let _ = config.warnings();
            true
        }
        Err(errors) => {
            let _ = errors.to_string();
            false
        }
    }
}

/// The config directory loader (`--config DIR`): the bytes are a directory's files, each introduced by a
/// line `#> NAME` (bytes before the first such line, if any, are `00.yaml`). Names are filtered and sorted as
/// the host does, the contents checked for UTF-8, the fragments merged and checked (the policy compiled)
/// and every problem and warning located in its fragment. Panics when one fragment that loads as a single
/// file does not load as a directory of that one fragment, or loads as another configuration. Returns
/// whether the directory loaded.
pub fn config_dir(bytes: &[u8]) -> bool {
    use crate::io::{is_fragment_name, ConfigBytes};
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut current = ("00.yaml".to_owned(), Vec::new());
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        match line.strip_prefix(b"#> ") {
            Some(name) => {
                let name = String::from_utf8_lossy(name.trim_ascii_end()).into_owned();
                let before = std::mem::replace(&mut current, (name, Vec::new()));
                if !(files.is_empty() && before.1.is_empty()) {
                    files.push(before);
                }
            }
            None => current.1.extend_from_slice(line),
        }
    }
    files.push(current);
    files.retain(|(name, _)| is_fragment_name(name));
    files.sort_by(|a, b| a.0.cmp(&b.0));
    files.dedup_by(|a, b| a.0 == b.0);
    let single = match files.as_slice() {
        [(name, body)] if name.ends_with(".yaml") => std::str::from_utf8(body)
            .ok()
            .and_then(|text| crate::runtime::load(text, None).ok()),
        _ => None,
    };
    let loaded = ConfigBytes::Fragments(files)
        .into_text()
        .map_err(|problem| vec![problem])
        .and_then(|text| {
            crate::runtime::load_located(text.source(), None, |_| Vec::new())
                .map_err(|errors| errors.0)
        });
    let merged = match loaded {
        Ok((config, origins)) => {
            for warning in config.warnings() {
                let _ = origins.locate(warning).to_string();
            }
            Some(config)
        }
        Err(problems) => {
            for problem in problems {
                let _ = problem.to_string();
            }
            None
        }
    };
    if let Some(alone) = single {
        assert_eq!(
            Some(&alone),
            merged.as_ref(),
            "one fragment that loads as a file loads as a directory of it, the same"
        );
    }
    merged.is_some()
}

/// One DPoP proof for `GET https://api.example.com/items` and the access token `token`, at a fixed time.
pub fn dpop_proof(proof: &str, token: &str, now: i64) -> bool {
    let allowed = [
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
        Algorithm::RS256,
        Algorithm::PS256,
    ];
    let nonce = |n: &str| n == "fuzz-nonce";
    let expected = crate::dpop::proof::Expected {
        allowed: &allowed,
        method: "GET",
        uri: "https://api.example.com/items",
        access_token: token,
        now,
        max_age: 300,
        nonce: Some(&nonce),
    };
    crate::dpop::proof::verify(proof, &expected).is_ok()
}

/// A DPoP proof over these claim bytes (any bytes), signed by a P-256 key made once per process whose
/// public JWK is in the header, so fuzzed claims get past the signature.
pub fn sign_dpop(claims: &[u8]) -> String {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    static KEY: OnceLock<EcdsaKeyPair> = OnceLock::new();
    let key = KEY.get_or_init(|| {
        EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("a P-256 key")
    });
    let point = key.public_key().as_ref();
    let header = serde_json::json!({
        "typ": "dpop+jwt",
        "alg": "ES256",
        "jwk": {
            "kty": "EC",
            "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        },
    });
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let signature = key
        .sign(&SystemRandom::new(), message.as_bytes())
        .expect("signing works");
    format!("{message}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
}

/// The HTTP forward-auth listener (`server.http_listen`) in each `server.http_mode`, fed one request
/// made of the fuzzer's bytes: the first byte picks the mode (envoy with `http_path_prefix: /auth`,
/// forwarded, nginx), the rest is `METHOD PATH` then `name: value` lines. Returns the answer's status, or
/// `None` when the bytes are not a request an HTTP server would hand on.
///
/// Panics when the listener answers a status it never should, or allows a request whose description is
/// missing or ambiguous in that mode (every description header exactly once; no fragment in the path):
/// a rebuild that takes a request it cannot describe would be checked as some other request.
pub fn http_request(bytes: &[u8]) -> Option<u16> {
    use tower::ServiceExt as _;
    let (&mode, rest) = bytes.split_first()?;
    let mode = match mode % 3 {
        0 => crate::config::HttpMode::Envoy,
        1 => crate::config::HttpMode::Forwarded,
        _ => crate::config::HttpMode::Nginx,
    };
    let text = String::from_utf8_lossy(rest);
    let mut lines = text.split('\n');
    let (method, path) = lines.next()?.split_once(' ')?;
    let mut builder = http::Request::builder().method(method).uri(path);
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line.split_once(':')?;
        let value = value.trim_start();
        builder = builder.header(name, value);
        headers.push((name.to_ascii_lowercase(), value.to_owned()));
    }
    let request = builder.body(axum::body::Body::empty()).ok()?;

    let h = harness();
    let server = crate::config::ServerConfig {
        http_mode: Some(mode),
        http_path_prefix: "/auth".to_owned(),
        ..Default::default()
    };
    let settings = crate::server::http::HttpSettings::from_config(&server)?;
    let router = crate::server::http::router(Arc::clone(&h.app), settings);
    let response = h.tokio.block_on(router.oneshot(request)).ok()?;
    let status = response.status().as_u16();
    assert!(
        matches!(status, 200 | 400 | 401 | 403 | 503),
        "the listener answered {status}"
    );
    if status == 200 {
        let count = |name: &str| headers.iter().filter(|(n, _)| n == name).count();
        let described: &[&str] = match mode {
            crate::config::HttpMode::Envoy => &[],
            crate::config::HttpMode::Forwarded => &[
                "x-forwarded-method",
                "x-forwarded-uri",
                "x-forwarded-host",
                "x-forwarded-proto",
            ],
            crate::config::HttpMode::Nginx => &["x-original-method", "x-original-uri"],
        };
        for name in described {
            assert_eq!(
                count(name),
                1,
                "allowed with {name} sent {} times",
                count(name)
            );
        }
        let uri = match mode {
            crate::config::HttpMode::Envoy => path,
            crate::config::HttpMode::Forwarded => header_value(&headers, "x-forwarded-uri"),
            crate::config::HttpMode::Nginx => header_value(&headers, "x-original-uri"),
        };
        assert!(
            !uri.contains('#'),
            "allowed a path with a fragment: {uri:?}"
        );
    }
    Some(status)
}

fn header_value<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map_or("", |(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seeds(target: &str) -> Vec<Vec<u8>> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(target);
        let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("seed-")
            })
            .map(|p| std::fs::read(p).unwrap())
            .collect();
        seeds.sort();
        assert!(!seeds.is_empty(), "no seeds for {target}");
        seeds
    }

    /// The committed seeds run through every entry point as the fuzz targets feed them.
    #[test]
    fn the_seed_corpus_runs_clean() {
        for seed in seeds("check_request") {
            assert!(check_request(&seed), "a seed CheckRequest decodes");
        }
        for seed in seeds("wire_request") {
            wire_request(&seed);
        }
        for seed in seeds("jwks") {
            jwks_document(&seed);
        }
        for seed in seeds("config") {
            config_yaml(std::str::from_utf8(&seed).unwrap());
            // Each example is one fragment of a directory, the same configuration.
            let mut dir = b"#> 10-example.yaml\n".to_vec();
            dir.extend_from_slice(&seed);
            assert_eq!(
                config_dir(&dir),
                crate::runtime::load(std::str::from_utf8(&seed).unwrap(), None).is_ok()
            );
        }
        let mut loaded = 0;
        for seed in seeds("config_dir") {
            loaded += usize::from(config_dir(&seed));
        }
        assert!(loaded >= 1, "a seed directory loads");
        for seed in seeds("jwt") {
            jwt_token(&String::from_utf8_lossy(&seed[1..]));
        }
        // The structured seeds reach past the signature: a valid token is allowed.
        let claims = serde_json::json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "a", "exp": 4_000_000_000u64});
        let token = sign_hs256(br#"{"alg":"HS256"}"#, claims.to_string().as_bytes());
        assert!(matches!(
            bearer_decision(&token),
            crate::decision::Decision::Allow(_)
        ));
        // A proof made by `sign_dpop` over the valid seed's claims passes every check.
        let valid = seeds("dpop")
            .into_iter()
            .find(|s| s.starts_with(b"\x01") && s.windows(10).any(|w| w == b"fuzz-nonce"))
            .unwrap();
        let claims: serde_json::Value = serde_json::from_slice(&valid[1..]).unwrap();
        let now = claims["iat"].as_i64().unwrap();
        assert!(dpop_proof(&sign_dpop(&valid[1..]), "token", now));
        assert_eq!(jwks_document(br#"{"keys":[]}"#), 0);

        // The forward-auth seeds reach an allow in every mode, and the hostile ones are refused.
        let mut statuses = HashMap::new();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/http_request");
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if let Some(seed) = name.strip_prefix("seed-") {
                let status = http_request(&std::fs::read(&path).unwrap());
                statuses.insert(seed.to_owned(), status);
            }
        }
        for (seed, want) in [
            ("envoy-allow", 200),
            ("forwarded-allow", 200),
            ("nginx-allow", 200),
            ("envoy-no-prefix", 400),
            ("envoy-bad-token", 401),
            ("forwarded-repeated", 400),
            ("nginx-fragment", 400),
            ("nginx-repeated-policy-header", 400),
        ] {
            assert_eq!(statuses.get(seed), Some(&Some(want)), "seed-{seed}");
        }
    }
}
