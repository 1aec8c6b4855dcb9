//! The chain's ownership rules, decided directly: providers built from a configuration and a request
//! view, no server and no transport. (The gRPC suites, `tests/chain.rs` and `tests/security.rs`, prove the
//! same rules end to end.)

use std::sync::Arc;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::clock::Clock;
use crate::config::{Config, MemoryFiles};
use crate::decision::{DenyCause, DenyReason, Unavailable};
use crate::env::Env;
use crate::providers::{Attempt, ChainOutcome, Providers};
use crate::request::{Headers, RequestView};

const NOW: i64 = 1_700_000_000;
const CORP_SECRET: &str = "a-long-random-shared-secret-for-corp";
const PARTNER_SECRET: &str = "a-long-random-shared-secret-for-partner";

fn providers(yaml: &str) -> Providers {
    let config = Config::from_yaml_str(yaml).unwrap_or_else(|e| panic!("{:?}", e.0));
    let files = MemoryFiles {
        vars: [
            ("CORP".to_owned(), CORP_SECRET.to_owned()),
            ("PARTNER".to_owned(), PARTNER_SECRET.to_owned()),
        ]
        .into(),
        ..MemoryFiles::default()
    };
    let env = Env {
        upstream: Arc::new(Unreachable),
        ..Env::offline(Clock::manual(NOW), files)
    };
    Providers::from_config(&config, &env, None).unwrap()
}

/// An upstream nothing answers: every call fails as a refused connection would.
struct Unreachable;

impl crate::providers::http::Upstream for Unreachable {
    fn client(
        &self,
        _: &crate::config::TlsSettings,
        _: crate::providers::http::Purpose,
        _: &crate::config::Sources,
    ) -> Result<Arc<dyn crate::providers::http::HttpClient>, crate::providers::http::TlsError> {
        Ok(Arc::new(Unreachable))
    }
}

impl crate::providers::http::HttpClient for Unreachable {
    fn send(
        &self,
        _: crate::providers::http::HttpRequest,
    ) -> futures_util::future::BoxFuture<
        'static,
        Result<crate::providers::http::HttpResponse, crate::providers::http::UpstreamError>,
    > {
        Box::pin(async {
            Err(crate::providers::http::UpstreamError::RequestFailed(
                "connection refused".into(),
            ))
        })
    }
}

fn hs256(secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn claims(issuer: &str, sub: &str) -> Value {
    json!({"iss": issuer, "aud": "api", "sub": sub, "iat": NOW - 10, "exp": NOW + 600})
}

/// Runs the chain over every provider (or those in `allowed`) for a request with `headers`.
async fn decide(
    providers: &Providers,
    headers: &[(&str, &str)],
    allowed: Option<&[usize]>,
) -> (ChainOutcome, Vec<Attempt>) {
    let request = RequestView::new("GET", "/", "api.example", Headers::Pairs(headers), "");
    // Without an explanation, the chain leaves out the `jwt` providers after the first of their place
    // (`Tables::visit`): it must decide the same.
    let unexplained = providers.authenticate(&request, allowed, None).await;
    let mut attempts = Vec::new();
    let outcome = providers
        .authenticate(&request, allowed, Some(&mut attempts))
        .await;
    assert_eq!(
        unexplained, outcome,
        "the same request decided without and with an explanation"
    );
    (outcome, attempts)
}

fn authenticated_by(outcome: &ChainOutcome) -> (&str, Option<&str>) {
    match outcome {
        ChainOutcome::Authenticated(id) => (&id.provider, id.subject.as_deref()),
        other => panic!("expected an identity, got {other:?}"),
    }
}

fn denied(outcome: &ChainOutcome) -> (Option<&str>, DenyReason) {
    match outcome {
        ChainOutcome::Denied(denial) => match denial.cause {
            DenyCause::Credential(reason) => (denial.provider.as_deref(), reason),
            ref other => panic!("expected a credential denial, got {other:?}"),
        },
        other => panic!("expected a denial, got {other:?}"),
    }
}

/// `corp` and `partner` (jwt, HS256) in `Authorization`, then `xkeys` (api_key) in `x-api-key`.
fn jwts_and_keys(extra: &str) -> Providers {
    providers(&format!(
        "providers:
  - {{name: corp, type: jwt, issuer: corp-issuer, audiences: [api], algorithms: [HS256], shared_secret: {{env: CORP}}}}
  - {{name: partner, type: jwt, issuer: partner-issuer, audiences: [api], algorithms: [HS256], shared_secret: {{env: PARTNER}}}}
  - name: xkeys
    type: api_key
    credential: {{header: x-api-key}}
    keys: [{{sha256: '{}', principal: ci-bot}}]
{extra}",
        crate::providers::api_key::hash_key("valid-key"),
    ))
}

#[tokio::test]
async fn the_tokens_issuer_picks_among_the_jwt_providers_of_its_place() {
    let providers = jwts_and_keys("");
    let token = hs256(PARTNER_SECRET, &claims("partner-issuer", "bob"));
    let (outcome, attempts) = decide(
        &providers,
        &[("authorization", &format!("Bearer {token}"))],
        None,
    )
    .await;
    assert_eq!(authenticated_by(&outcome), ("partner", Some("bob")));
    // The `jwt` providers of one place are served together: `partner` had its owner's answer already.
    let outcomes: Vec<(&str, &str)> = attempts.iter().map(|a| (&*a.provider, a.outcome)).collect();
    assert_eq!(
        outcomes,
        [
            ("corp", "authenticated"),
            ("partner", "skipped"),
            ("xkeys", "no_credential")
        ]
    );
    // Signed with the other issuer's secret: a bad signature, never the other provider's identity.
    let crossed = hs256(CORP_SECRET, &claims("partner-issuer", "bob"));
    let (outcome, _) = decide(
        &providers,
        &[("authorization", &format!("Bearer {crossed}"))],
        None,
    )
    .await;
    assert_eq!(denied(&outcome).1, DenyReason::BadSignature);
}

#[tokio::test]
async fn a_rejected_credential_beats_an_authenticated_one() {
    let providers = jwts_and_keys("");
    let valid = format!(
        "Bearer {}",
        hs256(CORP_SECRET, &claims("corp-issuer", "alice"))
    );
    let (alone, _) = decide(&providers, &[("x-api-key", "valid-key")], None).await;
    assert_eq!(authenticated_by(&alone).0, "xkeys");

    // A valid JWT beside a wrong API key: the later credential is judged too, and denies.
    let (outcome, _) = decide(
        &providers,
        &[("authorization", &valid), ("x-api-key", "wrong-key")],
        None,
    )
    .await;
    assert_eq!(denied(&outcome), (Some("xkeys"), DenyReason::UnknownApiKey));

    // An expired JWT beside a valid API key: denied by the JWT's provider.
    let mut expired = claims("corp-issuer", "alice");
    expired["exp"] = json!(NOW - 600);
    let expired = format!("Bearer {}", hs256(CORP_SECRET, &expired));
    let (outcome, _) = decide(
        &providers,
        &[("authorization", &expired), ("x-api-key", "valid-key")],
        None,
    )
    .await;
    assert_eq!(denied(&outcome), (Some("corp"), DenyReason::Expired));

    // An opaque token where only `jwt` providers read, beside a valid key: not understood, a denial.
    let (outcome, _) = decide(
        &providers,
        &[
            ("authorization", "Bearer opaque"),
            ("x-api-key", "valid-key"),
        ],
        None,
    )
    .await;
    assert_eq!(denied(&outcome), (Some("corp"), DenyReason::NotAJwt));
}

#[tokio::test]
async fn an_issuer_no_jwt_provider_trusts_is_rejected_when_nothing_takes_jwts() {
    let providers = jwts_and_keys("");
    let token = hs256(CORP_SECRET, &claims("elsewhere", "mallory"));
    let (outcome, _) = decide(
        &providers,
        &[("authorization", &format!("Bearer {token}"))],
        None,
    )
    .await;
    assert_eq!(denied(&outcome).1, DenyReason::UntrustedIssuer);
}

#[tokio::test]
async fn the_routes_providers_are_the_only_ones_asked() {
    let providers = jwts_and_keys("");
    let valid = format!(
        "Bearer {}",
        hs256(CORP_SECRET, &claims("corp-issuer", "alice"))
    );
    // Only `xkeys` (index 2) on this route: the JWT is not read at all, the key decides.
    let (outcome, attempts) = decide(
        &providers,
        &[("authorization", &valid), ("x-api-key", "valid-key")],
        Some(&[2]),
    )
    .await;
    assert_eq!(authenticated_by(&outcome).0, "xkeys");
    assert_eq!(attempts.len(), 1);
    // Only `partner` (index 1): corp's token is of an issuer this route does not trust.
    let (outcome, _) = decide(&providers, &[("authorization", &valid)], Some(&[1])).await;
    assert_eq!(
        denied(&outcome),
        (Some("partner"), DenyReason::UntrustedIssuer)
    );
}

#[tokio::test]
async fn shared_location_order_passes_a_rejected_key_to_the_next_owner_only() {
    let keys = |name: &str, key: &str, principal: &str| {
        format!(
            "  - {{name: {name}, type: api_key, shared_location_order: true, keys: [{{sha256: '{}', principal: {principal}}}]}}\n",
            crate::providers::api_key::hash_key(key)
        )
    };
    let providers = providers(&format!(
        "providers:\n{}{}",
        keys("first", "alpha", "a"),
        keys("second", "beta", "b")
    ));
    let (outcome, _) = decide(&providers, &[("authorization", "Bearer alpha")], None).await;
    assert_eq!(authenticated_by(&outcome).0, "first");
    // The first owner rejects `beta`; the config ordered the place, so the second judges it.
    let (outcome, attempts) = decide(&providers, &[("authorization", "Bearer beta")], None).await;
    assert_eq!(authenticated_by(&outcome).0, "second");
    assert_eq!(attempts[0].outcome, DenyReason::UnknownApiKey.as_str());
    // Neither knows it: the place's first rejection stands.
    let (outcome, _) = decide(&providers, &[("authorization", "Bearer gamma")], None).await;
    assert_eq!(denied(&outcome), (Some("first"), DenyReason::UnknownApiKey));
    // Off the route, the second provider is not asked.
    let (outcome, _) = decide(&providers, &[("authorization", "Bearer beta")], Some(&[0])).await;
    assert_eq!(denied(&outcome), (Some("first"), DenyReason::UnknownApiKey));
}

#[tokio::test]
async fn anonymous_answers_only_when_no_credential_is_presented() {
    let providers = providers(&format!(
        "providers:
  - {{name: keys, type: api_key, keys: [{{sha256: '{}', principal: ci-bot}}]}}
  - {{name: guest, type: anonymous}}
default_route: {{allow_anonymous: true}}",
        crate::providers::api_key::hash_key("valid-key")
    ));
    let (outcome, _) = decide(&providers, &[], None).await;
    assert_eq!(authenticated_by(&outcome).0, "guest");
    let (outcome, _) = decide(&providers, &[("authorization", "Bearer valid-key")], None).await;
    assert_eq!(authenticated_by(&outcome).0, "keys");
    // A JWS where only opaque-token providers read is not of a kind anyone takes: never anonymous.
    let jws = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.x";
    let (outcome, _) = decide(
        &providers,
        &[("authorization", &format!("Bearer {jws}"))],
        None,
    )
    .await;
    assert_eq!(
        denied(&outcome),
        (Some("keys"), DenyReason::UnsupportedCredential)
    );
    // A wrong key is a rejection, not a reason to fall back to anonymous.
    let (outcome, _) = decide(&providers, &[("authorization", "Bearer nope")], None).await;
    assert_eq!(denied(&outcome), (Some("keys"), DenyReason::UnknownApiKey));
}

#[tokio::test]
async fn no_credential_and_no_anonymous_provider_is_a_missing_credential() {
    let providers = jwts_and_keys("");
    let (outcome, _) = decide(&providers, &[("x-other", "1")], None).await;
    assert_eq!(denied(&outcome), (None, DenyReason::MissingCredential));
}

#[tokio::test]
async fn an_unavailable_upstream_is_never_an_allow() {
    // The introspection endpoint does not answer (see `Unreachable`).
    let closed = "127.0.0.1:9";
    let providers = jwts_and_keys(&format!(
        "  - name: idp
    type: introspection
    endpoint: 'http://{closed}/introspect'
    client_id: c
    client_secret: {{env: CORP}}
    credential: {{header: x-token}}
    upstream: {{timeout_seconds: 1}}"
    ));
    // A valid API key beside an opaque token that cannot be judged: an error answer, not the key's allow.
    let (outcome, _) = decide(
        &providers,
        &[("x-api-key", "valid-key"), ("x-token", "opaque-1")],
        None,
    )
    .await;
    assert_eq!(outcome, ChainOutcome::Unavailable(Unavailable::Upstream));
    // A rejected credential still outranks the unavailable one.
    let (outcome, _) = decide(
        &providers,
        &[("x-api-key", "wrong-key"), ("x-token", "opaque-1")],
        None,
    )
    .await;
    assert_eq!(denied(&outcome), (Some("xkeys"), DenyReason::UnknownApiKey));
    // And the identity of a JWT that authenticated does not survive it either.
    let valid = format!(
        "Bearer {}",
        hs256(CORP_SECRET, &claims("corp-issuer", "alice"))
    );
    let (outcome, _) = decide(
        &providers,
        &[("authorization", &valid), ("x-token", "opaque-1")],
        None,
    )
    .await;
    assert!(
        matches!(outcome, ChainOutcome::Unavailable(_)),
        "{outcome:?}"
    );
}

/// Many issuers at one place: the token's `iss` picks its provider through the issuer map, that
/// provider's own rules apply (here: DPoP required of the last one only), a provider of another place is
/// never asked, and on a route listing some providers only those are.
#[tokio::test]
async fn among_many_issuers_the_tokens_own_provider_and_its_rules_decide() {
    let mut yaml = String::from("providers:\n");
    for i in 0..200 {
        yaml.push_str(&format!(
            "  - {{name: t{i}, type: jwt, issuer: issuer-{i}, audiences: [api], algorithms: [HS256], shared_secret: {{env: CORP}}}}\n"
        ));
    }
    yaml.push_str(
        "  - {name: other-place, type: jwt, issuer: other-issuer, audiences: [api], algorithms: [HS256], shared_secret: {env: CORP}, credential: {header: x-token}}\n\
         \x20 - {name: last, type: jwt, issuer: last-issuer, audiences: [api], algorithms: [HS256], shared_secret: {env: CORP}, dpop: {mode: required}}\n",
    );
    let providers = providers(&yaml);
    let bearer = |issuer: &str| format!("Bearer {}", hs256(CORP_SECRET, &claims(issuer, "u")));

    let (outcome, _) = decide(
        &providers,
        &[("authorization", &bearer("issuer-137"))],
        None,
    )
    .await;
    assert_eq!(authenticated_by(&outcome), ("t137", Some("u")));
    // The last provider's rules, not the first one's of the place: a bearer token is refused. (The
    // denial names the place's first `jwt` provider, which served the place, as it always has.)
    let (outcome, _) = decide(
        &providers,
        &[("authorization", &bearer("last-issuer"))],
        None,
    )
    .await;
    let reason = denied(&outcome).1;
    assert!(reason.as_str().starts_with("dpop_"), "{reason:?}");
    // The issuer of a provider reading another place is not trusted at `Authorization`.
    let (outcome, _) = decide(
        &providers,
        &[("authorization", &bearer("other-issuer"))],
        None,
    )
    .await;
    assert_eq!(denied(&outcome).1, DenyReason::UntrustedIssuer);
    let token = hs256(CORP_SECRET, &claims("other-issuer", "o"));
    let (outcome, _) = decide(&providers, &[("x-token", &token)], None).await;
    assert_eq!(authenticated_by(&outcome), ("other-place", Some("o")));
    // A route listing t5 and t150 only: t150's token passes, t137's is of an issuer it does not trust.
    let route: &[usize] = &[5, 150];
    let (outcome, _) = decide(
        &providers,
        &[("authorization", &bearer("issuer-150"))],
        Some(route),
    )
    .await;
    assert_eq!(authenticated_by(&outcome).0, "t150");
    let (outcome, _) = decide(
        &providers,
        &[("authorization", &bearer("issuer-137"))],
        Some(route),
    )
    .await;
    assert_eq!(denied(&outcome), (Some("t5"), DenyReason::UntrustedIssuer));
    // Unknown issuers and missing credentials are answered the same as with one provider.
    let (outcome, _) = decide(&providers, &[("authorization", &bearer("nobody"))], None).await;
    assert_eq!(denied(&outcome), (Some("t0"), DenyReason::UntrustedIssuer));
    let (outcome, _) = decide(&providers, &[], None).await;
    assert_eq!(denied(&outcome).1, DenyReason::MissingCredential);
}
