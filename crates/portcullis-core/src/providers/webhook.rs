//! `webhook`: a custom HTTP auth endpoint, in the format of llama-stack's custom auth provider, so existing
//! endpoints work unchanged.
//!
//! Request: `POST {"api_key": <token>, "request": {"path", "headers", "params"}}`. The request's other
//! credentials never travel: no `authorization`, `proxy-authorization` or `cookie` header, no header or
//! query parameter any provider reads a credential from. A 200 answer
//! `{"principal", "attributes", "message"}` authenticates; another 4xx rejects; a timeout, a 5xx or a
//! malformed 200 is unavailable. With `cache_ttl_seconds`, results are cached by token digest (only
//! right when the endpoint's answer does not depend on the request).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::http::{Answer, CachedUpstream, HttpClient, HttpRequest, Method, Timed, UpstreamError};
use super::Outcome;
use crate::clock::Clock;
use crate::config::providers::WebhookConfig;
use crate::config::{CredentialLocation, ProviderConfig};
use crate::decision::DenyReason;
use crate::identity::{header_safe, Identity, IdentityBuilder, Principal, PrincipalKind};
use crate::recorder::Recorder;
use crate::request::RequestView;

pub struct Webhook {
    name: Arc<str>,
    endpoint: url::Url,
    /// Headers never sent: every credential header of the config, `authorization`,
    /// `proxy-authorization` and `cookie`.
    skip_headers: Box<[String]>,
    /// Query parameters never sent: every credential parameter of the config.
    skip_params: Box<[String]>,
    cache_ttl: Duration,
    timeout: Duration,
    max_body: usize,
    claims: IdentityBuilder,
    http: Arc<dyn HttpClient>,
    upstream: CachedUpstream,
    accept_jwt: bool,
}

#[derive(serde::Deserialize)]
struct AuthResponse {
    principal: String,
    #[serde(default)]
    attributes: Option<BTreeMap<String, Vec<String>>>,
}

// === impl Webhook ===

impl Webhook {
    /// `credential_places`: where every provider of the config reads its credential.
    pub fn new(
        common: &ProviderConfig,
        config: &WebhookConfig,
        credential_places: &[&CredentialLocation],
        http: Arc<dyn HttpClient>,
        clock: Clock,
        recorder: &dyn Recorder,
    ) -> Result<Webhook, url::ParseError> {
        let cache_ttl = Duration::from_secs(config.cache_ttl_seconds);
        let name: Arc<str> = Arc::from(common.name.as_str());
        Ok(Webhook {
            upstream: CachedUpstream::new(
                Arc::clone(&name),
                "webhook",
                "auth webhook",
                (!cache_ttl.is_zero()).then_some(config.upstream.cache_max_entries),
                clock,
                recorder,
            ),
            name,
            endpoint: url::Url::parse(&config.endpoint)?,
            skip_headers: ["authorization", "proxy-authorization", "cookie"]
                .into_iter()
                .map(str::to_owned)
                .chain(credential_places.iter().filter_map(|place| match place {
                    CredentialLocation::Header { name, .. } => Some(name.to_ascii_lowercase()),
                    _ => None,
                }))
                .collect(),
            skip_params: credential_places
                .iter()
                .filter_map(|place| match place {
                    CredentialLocation::Query(name) => Some(name.clone()),
                    _ => None,
                })
                .collect(),
            cache_ttl,
            timeout: Duration::from_secs(config.upstream.timeout_seconds),
            max_body: config.upstream.max_response_bytes,
            claims: IdentityBuilder::mapping_only(&common.claims_mapping),
            http,
            accept_jwt: config.accept_jwt,
        })
    }

    /// `accept_jwt`: JWT-shaped tokens may come here.
    pub fn accepts_jwt(&self) -> bool {
        self.accept_jwt
    }

    /// The upstream and its answer cache (for metrics).
    pub fn upstream(&self) -> &CachedUpstream {
        &self.upstream
    }

    pub async fn authenticate(&self, token: &str, request: &RequestView<'_>) -> Outcome {
        self.upstream
            .authenticate(token, self.call(token, request))
            .await
    }

    fn payload(&self, token: &str, request: &RequestView<'_>) -> Value {
        let mut headers = Map::new();
        for name in request.headers.names() {
            let lower = name.to_ascii_lowercase();
            if self.skip_headers.contains(&lower) {
                continue;
            }
            if let Some(value) = request.headers.get(&lower) {
                headers.insert(lower, Value::from(value));
            }
        }
        let mut params: HashMap<String, Vec<String>> = HashMap::new();
        for (k, v) in url::form_urlencoded::parse(request.query.as_bytes()) {
            if self.skip_params.iter().any(|p| *p == k) {
                continue;
            }
            params
                .entry(k.into_owned())
                .or_default()
                .push(v.into_owned());
        }
        json!({
            "api_key": token,
            "request": { "path": request.path, "headers": headers, "params": params },
        })
    }

    async fn call(
        &self,
        token: &str,
        request: &RequestView<'_>,
    ) -> Result<Timed<Answer>, UpstreamError> {
        let mut call = HttpRequest::new(Method::Post, self.endpoint.clone(), self.max_body)
            .header("content-type", "application/json");
        call.timeout = Some(self.timeout);
        call.body = serde_json::to_vec(&self.payload(token, request))
            .map_err(|e| UpstreamError::RequestFailed(e.into()))?;
        let response = self.http.send(call).await?;
        let status = response.status;
        if (500..600).contains(&status) {
            return Err(UpstreamError::BadStatus(status));
        }
        if status != 200 {
            return Ok(Timed {
                value: Answer::Refused(DenyReason::CredentialRejected),
                ttl: Duration::ZERO,
            });
        }
        let body = response.body;
        let answer: AuthResponse =
            serde_json::from_slice(&body).map_err(|_| UpstreamError::BadBody)?;
        if answer.principal.is_empty() || !header_safe(&answer.principal) {
            return Err(UpstreamError::BadBody);
        }
        Ok(Timed {
            value: Answer::Accepted(Arc::new(self.identity(answer))),
            ttl: self.cache_ttl,
        })
    }

    fn identity(&self, answer: AuthResponse) -> Identity {
        let mut principal = Principal::new(answer.principal, PrincipalKind::Human);
        principal.attributes = answer.attributes.unwrap_or_default();
        self.claims.for_principal(&self.name, principal)
    }
}
