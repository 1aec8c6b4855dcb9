//! `portcullis import llama-stack FILE`: a llama-stack run configuration's `server.auth` block as an
//! equivalent portcullis configuration, with llama-stack's answer shape (`answers: {body: llama_stack}`),
//! and a note on stderr for everything that could not be carried over.
//!
//! The mapping follows llama-stack's `auth_providers.py`:
//! - `oauth2_token` with `jwks` → a `jwt` provider (`issuer`, `audience`, `jwks.uri`,
//!   `key_recheck_period`, `jwks.token`, `tls_cafile`, `verify_tls`, `claims_mapping`); llama-stack
//!   validates with the key set when both `jwks` and `introspection` are given, and so does the import;
//! - `oauth2_token` with `introspection` → an `introspection` provider taking JWT-shaped tokens too
//!   (`accept_jwt`), as llama-stack introspects every token; `send_secret_in_body` picks the client
//!   authentication;
//! - `custom` → a `webhook` provider (the same request and answer format), JWT-shaped tokens included;
//! - `github_token` → a `github` provider.
//!
//! Secrets are never written inline: `${env.NAME}` becomes `{env: NAME}`, a literal becomes a reference
//! to an environment variable named on stderr.

use serde_yaml_ng::{Mapping, Value};

/// The converted configuration (YAML text) and the notes for stderr.
pub struct Imported {
    pub yaml: String,
    pub notes: Vec<String>,
}

/// Why a llama-stack configuration cannot be converted.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("not valid YAML: {0}")]
    Yaml(#[from] serde_yaml_ng::Error),
    #[error("{0}")]
    Unconvertible(String),
}

/// llama-stack's default `claims_mapping` for `oauth2_token` (`OAuth2TokenAuthConfig`).
const OAUTH2_CLAIMS: &[(&str, &str)] = &[
    ("sub", "roles"),
    ("username", "roles"),
    ("groups", "teams"),
    ("team", "teams"),
    ("project", "projects"),
    ("tenant", "namespaces"),
    ("namespace", "namespaces"),
];

/// llama-stack's default `claims_mapping` for `github_token`, in portcullis's GitHub claim names.
const GITHUB_CLAIMS: &[(&str, &str)] = &[("login", "username"), ("id", "user_id")];

/// The asymmetric algorithms: llama-stack takes the token header's `alg` for the key; portcullis lets each
/// key's type decide among these.
const ASYMMETRIC: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// Converts a llama-stack run configuration.
pub fn convert(text: &str) -> Result<Imported, ImportError> {
    let doc: Value = serde_yaml_ng::from_str(text)?;
    let auth = doc
        .get("server")
        .and_then(|s| s.get("auth"))
        .ok_or_else(|| {
            unconvertible("server.auth: not found: llama-stack runs without authentication here")
        })?;
    let mut notes = Vec::new();
    // Older llama-stack: `provider_type` and `config` instead of `provider_config`.
    let (provider, path) = match (auth.get("provider_config"), auth.get("provider_type")) {
        (Some(p), _) => (p.clone(), "server.auth.provider_config"),
        (None, Some(kind)) => {
            let mut p = auth
                .get("config")
                .cloned()
                .unwrap_or(Value::Mapping(Mapping::new()));
            if let Value::Mapping(m) = &mut p {
                m.insert("type".into(), kind.clone());
            }
            (p, "server.auth.config")
        }
        (None, None) => {
            return Err(unconvertible(
                "server.auth.provider_config: not found (nor provider_type)",
            ))
        }
    };
    if let Value::Mapping(m) = auth {
        for key in m.keys().filter_map(Value::as_str) {
            match key {
                "provider_config" | "provider_type" | "config" => {}
                "access_policy" => {
                    let rules = auth
                        .get("access_policy")
                        .and_then(Value::as_sequence)
                        .map_or(0, Vec::len);
                    if rules > 0 {
                        notes.push(format!(
                            "server.auth.access_policy: {rules} rule(s) not carried over: they govern llama-stack's own resources (models, vector stores, …), which llama-stack decides; portcullis authenticates and sends the principal and its attributes as x-auth-* headers, and can add per-route rules (`routes`)"
                        ));
                    }
                }
                other => notes.push(format!("server.auth.{other}: not carried over")),
            }
        }
    }
    let kind = str_at(&provider, "type").unwrap_or_default();
    let mut out = Mapping::new();
    out.insert("realm".into(), "llama-stack".into());
    out.insert(
        "answers".into(),
        Value::Mapping(Mapping::from_iter([("body".into(), "llama_stack".into())])),
    );
    let entry = match kind.as_str() {
        "oauth2_token" => oauth2(&provider, path, &mut notes)?,
        "custom" => custom(&provider, path, &mut notes)?,
        "github_token" => github(&provider, path, &mut notes),
        other => {
            return Err(unconvertible(&format!(
                "{path}.type: `{other}` is not one of oauth2_token, custom, github_token"
            )))
        }
    };
    out.insert(
        "providers".into(),
        Value::Sequence(vec![Value::Mapping(entry)]),
    );
    let yaml = format!(
        "# Converted from a llama-stack run configuration by `portcullis import llama-stack`.\n{}",
        serde_yaml_ng::to_string(&Value::Mapping(out))?
    );
    Ok(Imported { yaml, notes })
}

fn unconvertible(message: &str) -> ImportError {
    ImportError::Unconvertible(message.to_owned())
}

fn str_at(value: &Value, key: &str) -> Option<String> {
    match value.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A plain (non-secret) value: `${env.NAME:=default}` becomes its default, with a note.
fn plain(value: &Value, key: &str, path: &str, notes: &mut Vec<String>) -> Option<String> {
    let text = str_at(value, key)?;
    match env_reference(&text) {
        None => Some(text),
        Some((_, Some(default))) => {
            notes.push(format!(
                "{path}.{key}: `{text}` written as its default `{default}`; portcullis reads no environment here (set the value in the file)"
            ));
            Some(default)
        }
        Some((name, None)) => {
            notes.push(format!(
                "{path}.{key}: `{text}` has no default; put the value of `{name}` in the file"
            ));
            Some(text)
        }
    }
}

/// `${env.NAME}`, `${env.NAME:=default}`, `${env.NAME:default}`: the name and the default.
fn env_reference(text: &str) -> Option<(String, Option<String>)> {
    let inner = text.trim().strip_prefix("${env.")?.strip_suffix('}')?;
    let (name, default) = match inner.split_once(':') {
        Some((name, rest)) => {
            let default = rest.strip_prefix('=').unwrap_or(rest);
            (
                name,
                (!default.is_empty() && !default.starts_with('+')).then(|| default.to_owned()),
            )
        }
        None => (inner, None),
    };
    let valid = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    valid.then(|| (name.to_owned(), default))
}

/// A secret as a reference: `${env.NAME}` is `{env: NAME}`; a literal is moved to `fallback_env`.
fn secret(
    value: &Value,
    key: &str,
    path: &str,
    fallback_env: &str,
    notes: &mut Vec<String>,
) -> Value {
    let name = match str_at(value, key).as_deref().and_then(env_reference) {
        Some((name, _)) => name,
        None => {
            notes.push(format!(
                "{path}.{key}: secrets are never written into a portcullis configuration; set the environment variable `{fallback_env}` to the value from the llama-stack file (or use {{file: PATH}})"
            ));
            fallback_env.to_owned()
        }
    };
    Value::Mapping(Mapping::from_iter([("env".into(), name.into())]))
}

fn claims_mapping(provider: &Value, defaults: &[(&str, &str)]) -> Mapping {
    match provider.get("claims_mapping").and_then(Value::as_mapping) {
        Some(given) => given.clone(),
        None => defaults
            .iter()
            .map(|(claim, attribute)| (Value::from(*claim), Value::from(*attribute)))
            .collect(),
    }
}

fn seq(items: &[&str]) -> Value {
    Value::Sequence(items.iter().map(|s| Value::from(*s)).collect())
}

fn map(pairs: impl IntoIterator<Item = (&'static str, Value)>) -> Value {
    Value::Mapping(
        pairs
            .into_iter()
            .map(|(k, v)| (Value::from(k), v))
            .collect(),
    )
}

fn oauth2(provider: &Value, path: &str, notes: &mut Vec<String>) -> Result<Mapping, ImportError> {
    let mut entry = Mapping::new();
    entry.insert("name".into(), "oauth2".into());
    let verify = provider
        .get("verify_tls")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let cafile = plain(provider, "tls_cafile", path, notes);
    if let Some(jwks) = provider.get("jwks") {
        if provider.get("introspection").is_some() {
            notes.push(format!(
                "{path}.introspection: not used: llama-stack validates with `jwks` when both are set, and so does this configuration"
            ));
        }
        let issuer = plain(provider, "issuer", path, notes).ok_or_else(|| {
            unconvertible(&format!(
                "{path}.issuer: required by portcullis (llama-stack checks no issuer when it is unset); add the `iss` your tokens carry"
            ))
        })?;
        let uri = plain(jwks, "uri", &format!("{path}.jwks"), notes)
            .ok_or_else(|| unconvertible(&format!("{path}.jwks.uri: required")))?;
        let audience =
            plain(provider, "audience", path, notes).unwrap_or_else(|| "llama-stack".into());
        entry.insert("type".into(), "jwt".into());
        entry.insert("issuer".into(), issuer.into());
        entry.insert("audiences".into(), Value::Sequence(vec![audience.into()]));
        entry.insert("jwks_uri".into(), uri.into());
        entry.insert("algorithms".into(), seq(ASYMMETRIC));
        let period = jwks
            .get("key_recheck_period")
            .and_then(Value::as_u64)
            .unwrap_or(3600)
            .max(1);
        let mut fetch = Mapping::new();
        fetch.insert("refresh_seconds".into(), period.into());
        fetch.insert("min_refresh_seconds".into(), period.min(60).into());
        fetch.insert("max_refresh_seconds".into(), period.max(3600).into());
        let conditional = str_at(jwks, "token").is_some_and(|t| t.contains(":+"));
        if conditional {
            notes.push(format!(
                "{path}.jwks.token: a conditional `${{env.NAME:+…}}` reference is not carried over; set jwks.token ({{env: NAME}} or {{file: PATH}}) if the key set needs a bearer token"
            ));
        } else if jwks.get("token").is_some() {
            fetch.insert(
                "token".into(),
                secret(
                    jwks,
                    "token",
                    &format!("{path}.jwks"),
                    "PORTCULLIS_JWKS_TOKEN",
                    notes,
                ),
            );
            notes.push(format!(
                "{path}.jwks.token: in a pod, `token: {{file: /var/run/secrets/kubernetes.io/serviceaccount/token}}` reads the service-account token and follows its rotation"
            ));
        }
        entry.insert("jwks".into(), Value::Mapping(fetch));
        match (cafile, verify) {
            (Some(ca), _) => {
                entry.insert("tls".into(), map([("ca_file", ca.into())]));
            }
            (None, false) => {
                entry.insert("tls".into(), map([("insecure_skip_verify", true.into())]));
                notes.push(format!(
                    "{path}.verify_tls: false carried over as tls.insecure_skip_verify: true, which is DANGEROUS: prefer tls.ca_file"
                ));
            }
            (None, true) => {}
        }
    } else if let Some(intro) = provider.get("introspection") {
        let ipath = format!("{path}.introspection");
        let url = plain(intro, "url", &ipath, notes)
            .ok_or_else(|| unconvertible(&format!("{ipath}.url: required")))?;
        let client_id = plain(intro, "client_id", &ipath, notes)
            .ok_or_else(|| unconvertible(&format!("{ipath}.client_id: required")))?;
        let in_body = intro
            .get("send_secret_in_body")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        entry.insert("type".into(), "introspection".into());
        entry.insert("endpoint".into(), url.into());
        entry.insert("client_id".into(), client_id.into());
        entry.insert(
            "client_secret".into(),
            secret(
                intro,
                "client_secret",
                &ipath,
                "PORTCULLIS_INTROSPECTION_CLIENT_SECRET",
                notes,
            ),
        );
        entry.insert(
            "auth_method".into(),
            if in_body {
                "client_secret_post"
            } else {
                "client_secret_basic"
            }
            .into(),
        );
        entry.insert("accept_jwt".into(), true.into());
        if let Some(ca) = cafile {
            entry.insert("tls".into(), map([("ca_file", ca.into())]));
        }
        if !verify {
            notes.push(format!(
                "{path}.verify_tls: false is not carried over: llama-stack ignores it for introspection too"
            ));
        }
        for key in ["issuer", "audience"] {
            if provider.get(key).is_some() {
                notes.push(format!(
                    "{path}.{key}: not checked on introspection answers, as in llama-stack (set `audiences` to check `aud`)"
                ));
            }
        }
    } else {
        return Err(unconvertible(&format!(
            "{path}: one of jwks or introspection must be configured"
        )));
    }
    entry.insert(
        "claims_mapping".into(),
        Value::Mapping(claims_mapping(provider, OAUTH2_CLAIMS)),
    );
    Ok(entry)
}

fn custom(provider: &Value, path: &str, notes: &mut Vec<String>) -> Result<Mapping, ImportError> {
    let endpoint = plain(provider, "endpoint", path, notes)
        .ok_or_else(|| unconvertible(&format!("{path}.endpoint: required")))?;
    let mut entry = Mapping::new();
    entry.insert("name".into(), "custom".into());
    entry.insert("type".into(), "webhook".into());
    let https_or_local = reqwest::Url::parse(&endpoint).is_ok_and(|u| {
        u.scheme() == "https"
            || matches!(u.host(), Some(url::Host::Domain("localhost")))
            || matches!(u.host(), Some(url::Host::Ipv4(ip)) if ip.is_loopback())
            || matches!(u.host(), Some(url::Host::Ipv6(ip)) if ip.is_loopback())
    });
    if !https_or_local {
        entry.insert("dangerous_allow_plain_http".into(), true.into());
        notes.push(format!(
            "{path}.endpoint: plain http to another host carried over with dangerous_allow_plain_http: true: tokens cross the network in clear; serve the endpoint over https"
        ));
    }
    entry.insert("endpoint".into(), endpoint.into());
    entry.insert("accept_jwt".into(), true.into());
    Ok(entry)
}

fn github(provider: &Value, path: &str, notes: &mut Vec<String>) -> Mapping {
    let mut entry = Mapping::new();
    entry.insert("name".into(), "github".into());
    entry.insert("type".into(), "github".into());
    if let Some(base) = plain(provider, "github_api_base_url", path, notes) {
        entry.insert("api_base".into(), base.into());
    }
    let mut mapping = claims_mapping(provider, GITHUB_CLAIMS);
    if mapping.remove("organizations").is_some() {
        notes.push(format!(
            "{path}.claims_mapping.organizations: dropped: llama-stack never fills it; portcullis's `orgs` attribute comes with `fetch_orgs: true`"
        ));
    }
    entry.insert("claims_mapping".into(), Value::Mapping(mapping));
    entry
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_references() {
        assert_eq!(env_reference("${env.X}"), Some(("X".into(), None)));
        assert_eq!(
            env_reference("${env.X:=https://a/}"),
            Some(("X".into(), Some("https://a/".into())))
        );
        assert_eq!(env_reference("${env.X:+y}"), Some(("X".into(), None)));
        assert_eq!(env_reference("literal"), None);
        assert_eq!(env_reference("${env.a b}"), None);
    }
}
