//! `envoy_jwt`: a JWT payload that Envoy's own `jwt_authn` filter already verified, read from
//! `metadata_context.filter_metadata[<namespace>][<payload key>]`. No second signature check: this provider
//! is only as strong as the `jwt_authn` configuration in front of it (which must require the token).

use std::sync::Arc;

use serde_json::Value;

use super::Outcome;
use crate::config::providers::EnvoyJwtConfig;
use crate::config::ProviderConfig;
use crate::decision::DenyReason;
use crate::identity::{IdentityBuilder, MachineSuffix};
use crate::request::RequestView;

pub struct EnvoyJwt {
    name: Arc<str>,
    namespace: String,
    payload_key: String,
    issuers: Vec<String>,
    claims: IdentityBuilder,
}

impl EnvoyJwt {
    pub fn new(common: &ProviderConfig, config: &EnvoyJwtConfig) -> EnvoyJwt {
        EnvoyJwt {
            name: Arc::from(common.name.as_str()),
            namespace: config.metadata_namespace.clone(),
            payload_key: config.payload_key.clone(),
            issuers: config.issuers.clone(),
            claims: IdentityBuilder::mapping_only(&common.claims_mapping).with_machine_suffix(
                MachineSuffix::from_config(config.machine_subject_suffix.as_deref()),
            ),
        }
    }

    pub fn authenticate(&self, request: &RequestView<'_>) -> Outcome {
        let payload = request
            .metadata
            .and_then(|m| m.get(&self.namespace))
            .and_then(|ns| ns.get(&self.payload_key))
            .and_then(Value::as_object);
        let Some(payload) = payload else {
            return Outcome::NoCredential;
        };
        let issuer = payload.get("iss").and_then(Value::as_str).unwrap_or("");
        if !self.issuers.is_empty() && !self.issuers.iter().any(|i| i == issuer) {
            return Outcome::Rejected(DenyReason::UntrustedIssuer);
        }
        if crate::identity::unusable_subject(payload) {
            return Outcome::Rejected(DenyReason::InvalidSubject);
        }
        let expires_at = payload
            .get("exp")
            .and_then(Value::as_f64)
            .map_or(i64::MAX, |e| e.floor() as i64);
        let identity =
            self.claims
                .claims_identity(&self.name, Arc::from(issuer), payload.clone(), expires_at);
        Outcome::Authenticated(Arc::new(identity))
    }
}
