//! `introspection`: opaque tokens checked against an OAuth2 introspection endpoint (RFC 7662).
//!
//! Active answers are cached until min(`exp`, `max_ttl`), inactive ones for `negative_ttl`; concurrent
//! checks of one token share one upstream call. A timeout, a 5xx, an error status or a malformed answer is
//! "unavailable" (an error answer, never an allow); `active: false` is a 401.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use super::http::{Answer, CachedUpstream, HttpClient, HttpRequest, Method, Timed, UpstreamError};
use super::Outcome;
use crate::clock::Clock;
use crate::config::providers::{ClientAuthMethod, IntrospectionConfig};
use crate::config::{ProviderConfig, Secret};
use crate::decision::DenyReason;
use crate::identity::{IdentityBuilder, MachineSuffix};
use crate::recorder::Recorder;

pub struct Introspection {
    name: Arc<str>,
    endpoint: url::Url,
    client_id: String,
    secret: Secret,
    method: ClientAuthMethod,
    hint: String,
    max_ttl: Duration,
    negative_ttl: Duration,
    audiences: Vec<String>,
    timeout: Duration,
    max_body: usize,
    claims: IdentityBuilder,
    http: Arc<dyn HttpClient>,
    upstream: CachedUpstream,
    accept_jwt: bool,
    clock: Clock,
}

impl Introspection {
    pub fn new(
        common: &ProviderConfig,
        config: &IntrospectionConfig,
        secret: Secret,
        http: Arc<dyn HttpClient>,
        clock: Clock,
        recorder: &dyn Recorder,
    ) -> Result<Introspection, url::ParseError> {
        let name: Arc<str> = Arc::from(common.name.as_str());
        Ok(Introspection {
            upstream: CachedUpstream::new(
                Arc::clone(&name),
                "introspection",
                "token introspection",
                Some(config.upstream.cache_max_entries),
                clock.clone(),
                recorder,
            ),
            name,
            endpoint: url::Url::parse(&config.endpoint)?,
            client_id: config.client_id.clone(),
            secret,
            method: config.auth_method,
            hint: config.token_type_hint.clone(),
            max_ttl: Duration::from_secs(config.max_ttl_seconds),
            negative_ttl: Duration::from_secs(config.negative_ttl_seconds),
            audiences: config.audiences.clone(),
            timeout: Duration::from_secs(config.upstream.timeout_seconds),
            max_body: config.upstream.max_response_bytes,
            claims: IdentityBuilder::mapping_only(&common.claims_mapping).with_machine_suffix(
                MachineSuffix::from_config(config.machine_subject_suffix.as_deref()),
            ),
            http,
            clock,
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

    pub async fn authenticate(&self, token: &str) -> Outcome {
        self.upstream
            .authenticate(token, self.introspect(token))
            .await
    }

    async fn introspect(&self, token: &str) -> Result<Timed<Answer>, UpstreamError> {
        let mut form: Vec<(&str, &str)> = vec![("token", token)];
        if !self.hint.is_empty() {
            form.push(("token_type_hint", &self.hint));
        }
        let secret = String::from_utf8_lossy(self.secret.expose());
        let mut request = HttpRequest::new(Method::Post, self.endpoint.clone(), self.max_body)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json");
        request.timeout = Some(self.timeout);
        match self.method {
            ClientAuthMethod::ClientSecretBasic => {
                // RFC 6749 §2.3.1: the id and secret are form-urlencoded before Basic encoding.
                let id: String =
                    url::form_urlencoded::byte_serialize(self.client_id.as_bytes()).collect();
                let pw: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
                request.basic_auth = Some((id, pw));
            }
            ClientAuthMethod::ClientSecretPost => {
                form.push(("client_id", &self.client_id));
                form.push(("client_secret", &secret));
            }
        }
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        request.body = body.into_bytes();
        let response = self.http.send(request).await?;
        if response.status != 200 {
            return Err(UpstreamError::BadStatus(response.status));
        }
        let body = response.body;
        let claims: Map<String, Value> =
            serde_json::from_slice(&body).map_err(|_| UpstreamError::BadBody)?;
        Ok(self.judge(claims))
    }

    /// RFC 7662 §2.2: `active` is required; the rest is optional.
    fn judge(&self, claims: Map<String, Value>) -> Timed<Answer> {
        let inactive = |reason| Timed {
            value: Answer::Refused(reason),
            ttl: self.negative_ttl,
        };
        if claims.get("active") != Some(&Value::Bool(true)) {
            return inactive(DenyReason::InactiveToken);
        }
        let now = self.clock.now();
        // RFC 7662 §2.2: `exp`, `nbf` and `iat` are NumericDates; anything else is not a time at all.
        let time = |name: &str| match claims.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => n.as_f64().map(|t| Some(t.floor() as i64)).ok_or(()),
            Some(_) => Err(()),
        };
        let (exp, nbf) = match (time("exp"), time("nbf"), time("iat")) {
            (Ok(exp), Ok(nbf), Ok(_)) => (exp, nbf),
            _ => return inactive(DenyReason::MalformedTimeClaim),
        };
        if exp.is_some_and(|exp| exp <= now) {
            return inactive(DenyReason::Expired);
        }
        if nbf.is_some_and(|nbf| nbf > now) {
            return inactive(DenyReason::NotYetValid);
        }
        if crate::identity::unusable_subject(&claims) {
            return inactive(DenyReason::InvalidSubject);
        }
        if !self.audiences.is_empty() {
            let ok = match claims.get("aud") {
                Some(Value::String(a)) => self.audiences.contains(a),
                Some(Value::Array(items)) => items.iter().any(|a| {
                    a.as_str()
                        .is_some_and(|a| self.audiences.iter().any(|x| x == a))
                }),
                _ => false,
            };
            if !ok {
                return inactive(DenyReason::WrongAudience);
            }
        }
        let expires_at = exp.unwrap_or(now + self.max_ttl.as_secs() as i64);
        let remaining = Duration::from_secs(u64::try_from(expires_at - now).unwrap_or(0));
        let issuer: Arc<str> = Arc::from(claims.get("iss").and_then(Value::as_str).unwrap_or(""));
        let mut identity = self
            .claims
            .claims_identity(&self.name, issuer, claims, expires_at);
        // The chain checks the proof of every bound token this provider authenticates (crate::dpop).
        identity.dpop_bound = crate::dpop::is_bound(&identity.claims);
        Timed {
            value: Answer::Accepted(Arc::new(identity)),
            ttl: remaining.min(self.max_ttl),
        }
    }
}
