//! `kubernetes`: service-account tokens checked with the API server's TokenReview
//! (`POST /apis/authentication.k8s.io/v1/tokenreviews`, authentication.k8s.io/v1).
//!
//! The review is sent with portcullis's own token (its service account needs `system:auth-delegator`) and
//! the configured `audiences`. `status.authenticated: true` with a user authenticates: the principal is
//! `status.user.username` (`system:serviceaccount:<namespace>:<name>`), a machine unless it is not a service
//! account; `status.user.groups` is the `groups` attribute. When audiences are configured the answer's
//! `status.audiences` must name one of them. `authenticated: false` is a 401. A non-2xx answer, a timeout
//! or a malformed body is "unavailable". Answers are cached by token digest like introspection's, never
//! past the token's own `exp` (read from its payload only to bound the cache; the API server decides).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::http::{
    Answer, BearerToken, CachedUpstream, HttpClient, HttpRequest, Method, Timed, UpstreamError,
};
use super::Outcome;
use crate::clock::Clock;
use crate::config::providers::KubernetesConfig;
use crate::config::ProviderConfig;
use crate::decision::DenyReason;
use crate::identity::{header_safe, IdentityBuilder, Principal, PrincipalKind};
use crate::recorder::Recorder;

/// The TokenReview endpoint, below the API server's URL.
const TOKEN_REVIEWS: &str = "apis/authentication.k8s.io/v1/tokenreviews";

pub struct Kubernetes {
    name: Arc<str>,
    reviews: url::Url,
    /// The issuer every identity names: the API server.
    issuer: Arc<str>,
    audiences: Vec<String>,
    bearer: BearerToken,
    ttl: Duration,
    negative_ttl: Duration,
    timeout: Duration,
    max_body: usize,
    claims: IdentityBuilder,
    http: Arc<dyn HttpClient>,
    upstream: CachedUpstream,
    clock: Clock,
}

#[derive(serde::Deserialize)]
struct Review {
    #[serde(default)]
    status: Status,
}

#[derive(serde::Deserialize, Default)]
struct Status {
    #[serde(default)]
    authenticated: bool,
    #[serde(default)]
    user: Option<User>,
    #[serde(default)]
    audiences: Vec<String>,
}

#[derive(serde::Deserialize)]
struct User {
    username: String,
    #[serde(default)]
    uid: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
}

// === impl Kubernetes ===

impl Kubernetes {
    pub fn new(
        common: &ProviderConfig,
        config: &KubernetesConfig,
        bearer: BearerToken,
        http: Arc<dyn HttpClient>,
        clock: Clock,
        recorder: &dyn Recorder,
    ) -> Result<Kubernetes, url::ParseError> {
        let name: Arc<str> = Arc::from(common.name.as_str());
        let base = format!("{}/", config.api_server.trim_end_matches('/'));
        Ok(Kubernetes {
            upstream: CachedUpstream::new(
                Arc::clone(&name),
                "kubernetes",
                "Kubernetes TokenReview",
                Some(config.upstream.cache_max_entries),
                clock.clone(),
                recorder,
            ),
            name,
            reviews: url::Url::parse(&base)?.join(TOKEN_REVIEWS)?,
            issuer: Arc::from(config.api_server.as_str()),
            audiences: config.audiences.clone(),
            bearer,
            ttl: Duration::from_secs(config.cache_ttl_seconds),
            negative_ttl: Duration::from_secs(config.negative_ttl_seconds),
            timeout: Duration::from_secs(config.upstream.timeout_seconds),
            max_body: config.upstream.max_response_bytes,
            claims: IdentityBuilder::mapping_only(&common.claims_mapping),
            http,
            clock,
        })
    }

    /// The upstream and its answer cache (for metrics).
    pub fn upstream(&self) -> &CachedUpstream {
        &self.upstream
    }

    pub async fn authenticate(&self, token: &str) -> Outcome {
        self.upstream.authenticate(token, self.review(token)).await
    }

    async fn review(&self, token: &str) -> Result<Timed<Answer>, UpstreamError> {
        let mut spec = json!({ "token": token });
        if !self.audiences.is_empty() {
            spec["audiences"] = json!(self.audiences);
        }
        let body = json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": spec,
        });
        let mut call = HttpRequest::new(Method::Post, self.reviews.clone(), self.max_body)
            .header("accept", "application/json")
            .header("content-type", "application/json");
        call.timeout = Some(self.timeout);
        call.bearer = Some(self.bearer.clone());
        call.body =
            serde_json::to_vec(&body).map_err(|e| UpstreamError::RequestFailed(e.into()))?;
        let response = self.http.send(call).await?;
        // The API server answers 201 Created (200 from some aggregators); anything else is its failure or
        // ours (401/403: portcullis's own token or role), never the client's.
        if !(200..300).contains(&response.status) {
            return Err(UpstreamError::BadStatus(response.status));
        }
        let review: Review =
            serde_json::from_slice(&response.body).map_err(|_| UpstreamError::BadBody)?;
        Ok(self.judge(review.status, token))
    }

    fn judge(&self, status: Status, token: &str) -> Timed<Answer> {
        let refused = |reason| Timed {
            value: Answer::Refused(reason),
            ttl: self.negative_ttl,
        };
        let user = match status.user {
            Some(user) if status.authenticated => user,
            _ => return refused(DenyReason::InactiveToken),
        };
        if !self.audiences.is_empty()
            && !status.audiences.iter().any(|a| self.audiences.contains(a))
        {
            return refused(DenyReason::WrongAudience);
        }
        if user.username.is_empty() || !header_safe(&user.username) {
            return refused(DenyReason::CredentialRejected);
        }
        let now = self.clock.now();
        let expires_at = unverified_exp(token).unwrap_or(i64::MAX);
        if expires_at <= now {
            return refused(DenyReason::Expired);
        }
        let ttl = Duration::from_secs(u64::try_from(expires_at - now).unwrap_or(0)).min(self.ttl);
        let kind = if user.username.starts_with("system:serviceaccount:") {
            PrincipalKind::Machine
        } else {
            PrincipalKind::Human
        };
        let mut principal = Principal::new(user.username, kind);
        principal.issuer = Arc::clone(&self.issuer);
        principal.attributes = BTreeMap::from([("groups".to_owned(), user.groups)]);
        if let Some(uid) = user.uid {
            principal.claims.insert("uid".into(), Value::from(uid));
        }
        let mut identity = self.claims.for_principal(&self.name, principal);
        identity.expires_at = expires_at;
        Timed {
            value: Answer::Accepted(Arc::new(identity)),
            ttl,
        }
    }
}

/// The `exp` of a JWT-shaped token's payload, unverified: only ever used to shorten a cache entry.
fn unverified_exp(token: &str) -> Option<i64> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let claims: Map<String, Value> = serde_json::from_slice(&bytes).ok()?;
    claims
        .get("exp")
        .and_then(Value::as_f64)
        .map(|e| e.floor() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_read_only_from_a_jwt_payload() {
        let payload = URL_SAFE_NO_PAD.encode(r#"{"exp":1700000000.5}"#);
        assert_eq!(
            unverified_exp(&format!("h.{payload}.s")),
            Some(1_700_000_000)
        );
        assert_eq!(unverified_exp("opaque"), None);
        assert_eq!(unverified_exp("h.!!.s"), None);
    }
}
