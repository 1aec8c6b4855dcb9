//! `github`: GitHub access tokens, checked with `GET {api_base}/user` (and `GET /user/orgs` when the
//! organisations are wanted). The principal is the login; attributes carry `login`, `id` and `orgs`.
//! Results are cached by token digest; concurrent checks of one token share one call.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::http::{Answer, CachedUpstream, HttpClient, HttpRequest, Method, Timed, UpstreamError};
use super::Outcome;
use crate::clock::Clock;
use crate::config::providers::GithubConfig;
use crate::config::ProviderConfig;
use crate::decision::DenyReason;
use crate::identity::{header_safe, Identity, IdentityBuilder, Principal, PrincipalKind};
use crate::recorder::Recorder;

pub struct Github {
    name: Arc<str>,
    api_base: String,
    fetch_orgs: bool,
    allowed_orgs: Vec<String>,
    ttl: Duration,
    timeout: Duration,
    max_body: usize,
    claims: IdentityBuilder,
    http: Arc<dyn HttpClient>,
    upstream: CachedUpstream,
}

#[derive(serde::Deserialize)]
struct User {
    login: String,
    id: u64,
    #[serde(default)]
    name: Option<String>,
}

#[derive(serde::Deserialize)]
struct Org {
    login: String,
}

enum Fetched<T> {
    Ok(T),
    Refused,
}

// === impl Github ===

impl Github {
    pub fn new(
        common: &ProviderConfig,
        config: &GithubConfig,
        http: Arc<dyn HttpClient>,
        clock: Clock,
        recorder: &dyn Recorder,
    ) -> Github {
        let name: Arc<str> = Arc::from(common.name.as_str());
        Github {
            upstream: CachedUpstream::new(
                Arc::clone(&name),
                "github",
                "GitHub",
                Some(config.upstream.cache_max_entries),
                clock,
                recorder,
            ),
            name,
            api_base: config.api_base.trim_end_matches('/').to_owned(),
            fetch_orgs: config.fetch_orgs || !config.allowed_orgs.is_empty(),
            allowed_orgs: config.allowed_orgs.clone(),
            ttl: Duration::from_secs(config.cache_ttl_seconds),
            timeout: Duration::from_secs(config.upstream.timeout_seconds),
            max_body: config.upstream.max_response_bytes,
            claims: IdentityBuilder::mapping_only(&common.claims_mapping),
            http,
        }
    }

    /// The upstream and its answer cache (for metrics).
    pub fn upstream(&self) -> &CachedUpstream {
        &self.upstream
    }

    pub async fn authenticate(&self, token: &str) -> Outcome {
        self.upstream.authenticate(token, self.check(token)).await
    }

    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        token: &str,
        path: &str,
    ) -> Result<Fetched<T>, UpstreamError> {
        let url = url::Url::parse(&format!("{}{path}", self.api_base))
            .map_err(|e| UpstreamError::RequestFailed(e.into()))?;
        let mut call = HttpRequest::new(Method::Get, url, self.max_body)
            .header("authorization", format!("Bearer {token}"))
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28");
        call.timeout = Some(self.timeout);
        let response = self.http.send(call).await?;
        let rate_limited = response.header("x-ratelimit-remaining") == Some("0");
        match response.status {
            200 => serde_json::from_slice(&response.body)
                .map(Fetched::Ok)
                .map_err(|_| UpstreamError::BadBody),
            // Bad credentials (401) or a token without access (403), unless GitHub is rate limiting us.
            401 | 403 if !rate_limited => Ok(Fetched::Refused),
            code => Err(UpstreamError::BadStatus(code)),
        }
    }

    async fn check(&self, token: &str) -> Result<Timed<Answer>, UpstreamError> {
        // Refusals are kept briefly so a replayed bad token does not hammer GitHub.
        let refused = |reason| Timed {
            value: Answer::Refused(reason),
            ttl: self.ttl.min(Duration::from_secs(10)),
        };
        let user: User = match self.get(token, "/user").await? {
            Fetched::Ok(user) => user,
            Fetched::Refused => return Ok(refused(DenyReason::CredentialRejected)),
        };
        let orgs: Vec<String> = if self.fetch_orgs {
            match self.get::<Vec<Org>>(token, "/user/orgs").await? {
                Fetched::Ok(orgs) => orgs.into_iter().map(|o| o.login).collect(),
                Fetched::Refused => Vec::new(),
            }
        } else {
            Vec::new()
        };
        if !self.allowed_orgs.is_empty()
            && !orgs
                .iter()
                .any(|o| self.allowed_orgs.iter().any(|a| a.eq_ignore_ascii_case(o)))
        {
            return Ok(refused(DenyReason::OrganizationNotAllowed));
        }
        if !header_safe(&user.login) {
            return Err(UpstreamError::BadBody);
        }
        Ok(Timed {
            value: Answer::Accepted(Arc::new(self.identity(user, orgs))),
            ttl: self.ttl,
        })
    }

    fn identity(&self, user: User, orgs: Vec<String>) -> Identity {
        let mut principal = Principal::new(user.login.as_str(), PrincipalKind::Human);
        principal.issuer = Arc::from(self.api_base.as_str());
        principal.attributes = BTreeMap::from([
            ("login".to_owned(), vec![user.login.clone()]),
            ("id".to_owned(), vec![user.id.to_string()]),
        ]);
        if self.fetch_orgs {
            principal.attributes.insert("orgs".to_owned(), orgs.clone());
        }
        principal.claims.insert("id".into(), Value::from(user.id));
        principal.claims.insert("orgs".into(), Value::from(orgs));
        if let Some(name) = user.name {
            principal.claims.insert("name".into(), Value::from(name));
        }
        self.claims.for_principal(&self.name, principal)
    }
}
