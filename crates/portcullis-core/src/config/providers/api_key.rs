//! `type: api_key`: static keys, stored only as SHA-256 digests.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::Problems;

/// Who an API key belongs to.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyEntry {
    /// The SHA-256 of the key, as `portcullis hash-key` prints it (64 hex digits, `sha256:` prefix allowed).
    pub sha256: String,
    /// The principal the key authenticates (`x-auth-subject`).
    pub principal: String,
    /// Attributes, e.g. `scopes: [read:data]`. A string value is split on spaces.
    #[serde(default)]
    pub attributes: BTreeMap<String, StringOrList>,
    /// Defaults to `machine`.
    #[serde(default = "default_machine")]
    pub kind: KindName,
}

fn default_machine() -> KindName {
    KindName::Machine
}

/// `human` or `machine`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KindName {
    Human,
    Machine,
}

/// A string (split on spaces) or a list of strings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum StringOrList {
    One(String),
    Many(Vec<String>),
}

// === impl StringOrList ===

impl StringOrList {
    pub fn values(&self) -> Vec<String> {
        match self {
            StringOrList::One(s) => s.split_whitespace().map(str::to_owned).collect(),
            StringOrList::Many(v) => v.clone(),
        }
    }
}

/// `type: api_key`: static keys, stored only as SHA-256 digests.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Keys in the configuration.
    #[serde(default)]
    pub keys: Vec<ApiKeyEntry>,
    /// A YAML or JSON file holding a list of keys in the same shape; re-read when it changes.
    #[serde(default)]
    pub keys_file: Option<PathBuf>,
    /// How often `keys_file` is checked for changes. Defaults to 10.
    #[serde(default = "default_reload")]
    pub reload_seconds: u64,
}

fn default_reload() -> u64 {
    10
}

/// Checks an `api_key` provider's settings.
pub(super) fn validate(problems: &mut Problems, path: &str, c: &ApiKeyConfig) {
    if c.keys.is_empty() && c.keys_file.is_none() {
        problems.add(path, "an api_key provider needs `keys` or `keys_file`");
    }
    for (i, key) in c.keys.iter().enumerate() {
        validate_api_key(problems, &format!("{path}.keys[{i}]"), key);
    }
    if c.reload_seconds == 0 {
        problems.add(format!("{path}.reload_seconds"), "must be at least 1");
    }
}

/// Checks one API key entry.
fn validate_api_key(problems: &mut Problems, path: &str, key: &ApiKeyEntry) {
    if parse_digest(&key.sha256).is_none() {
        problems.add(
            format!("{path}.sha256"),
            "must be 64 hex digits (`portcullis hash-key` prints it); never the key itself",
        );
    }
    if key.principal.is_empty() || key.principal.chars().any(char::is_control) {
        problems.add(format!("{path}.principal"), "must be one non-empty line");
    }
}

/// Parses `sha256:<64 hex>` or `<64 hex>`.
pub fn parse_digest(text: &str) -> Option<[u8; 32]> {
    let hex = text.strip_prefix("sha256:").unwrap_or(text);
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
        let pair = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}
