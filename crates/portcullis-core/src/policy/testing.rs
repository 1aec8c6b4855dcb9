//! Test helpers: hand-built identities and policies from YAML.

use std::sync::Arc;

use serde_json::Value as Json;

use super::{Policy, ProviderInfo};
use crate::config::PolicyConfig;
use crate::identity::{Identity, PrincipalKind};

/// A person authenticated by `auth0`, with these scopes and claims.
pub(super) fn identity(scopes: &str, claims: Json) -> Identity {
    Identity {
        provider: Arc::from("auth0"),
        subject: Some("auth0|alice".to_owned()),
        kind: PrincipalKind::Human,
        client_id: None,
        attributes: Default::default(),
        issuer: Arc::from("https://example.eu.auth0.com/"),
        scopes: scopes.to_owned(),
        headers: Vec::new(),
        claims: claims.as_object().expect("claims are an object").clone(),
        expires_at: i64::MAX,
        actors: Vec::new(),
        dpop_bound: false,
        prepared: Default::default(),
    }
}

/// A client-credentials token from `auth0`.
pub(super) fn machine(client: &str, scopes: &str, claims: Json) -> Identity {
    Identity {
        subject: Some(format!("{client}@clients")),
        kind: PrincipalKind::Machine,
        client_id: Some(client.to_owned()),
        ..identity(scopes, claims)
    }
}

/// A policy from YAML, with providers `auth0` and `github`; panics on any problem.
pub(super) fn policy(yaml: &str) -> Policy {
    let config: PolicyConfig = serde_yaml_ng::from_str(yaml).expect("policy YAML parses");
    let providers = ["auth0", "github"].map(|name| ProviderInfo {
        name,
        challenge_scheme: Some("Bearer"),
    });
    Policy::compile(&config, &providers, "portcullis").expect("policy is valid")
}
