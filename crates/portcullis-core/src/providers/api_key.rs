//! `api_key`: static keys, stored only as SHA-256 digests (in the config or in a file re-read when it
//! changes), compared in constant time. `portcullis hash-key` prints the digest of a key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use subtle::ConstantTimeEq;

use super::http::digest;
use super::Outcome;
use crate::config::providers::{parse_digest, ApiKeyConfig, ApiKeyEntry, KindName};
use crate::config::Sources;
use crate::decision::DenyReason;
use crate::identity::{Identity, PrincipalKind};
use crate::identity::{IdentityBuilder, Principal};

/// The digest of a key as the config wants it: `sha256:<hex>`.
pub fn hash_key(key: &str) -> String {
    let d = digest(key);
    let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

struct Key {
    digest: [u8; 32],
    identity: Arc<Identity>,
}

/// Why a keys file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeysFileError {
    #[error("cannot read `{path}`: {source}")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{path}` is not a list of keys: {message}")]
    Invalid { path: PathBuf, message: String },
}

pub struct ApiKeys {
    name: Arc<str>,
    fixed: Vec<ApiKeyEntry>,
    file: Option<PathBuf>,
    reload: Duration,
    claims: IdentityBuilder,
    keys: ArcSwap<Vec<Key>>,
}

// === impl ApiKeys ===

impl ApiKeys {
    /// Builds the key list; reads `keys_file` (through `sources`) now, so a broken file stops the start.
    pub fn new(
        name: Arc<str>,
        config: &ApiKeyConfig,
        claims_mapping: &BTreeMap<String, String>,
        sources: &Sources,
    ) -> Result<ApiKeys, KeysFileError> {
        let provider = ApiKeys {
            name,
            fixed: config.keys.clone(),
            file: config.keys_file.clone(),
            reload: Duration::from_secs(config.reload_seconds),
            claims: IdentityBuilder::mapping_only(claims_mapping),
            keys: ArcSwap::from_pointee(Vec::new()),
        };
        let from_file = match &provider.file {
            Some(path) => {
                let bytes = sources
                    .read(path)
                    .map_err(|source| KeysFileError::Unreadable {
                        path: path.clone(),
                        source,
                    })?;
                parse_keys_file(path, &bytes)?
            }
            None => Vec::new(),
        };
        provider.install(from_file);
        Ok(provider)
    }

    fn install(&self, from_file: Vec<ApiKeyEntry>) {
        let keys = self
            .fixed
            .iter()
            .chain(&from_file)
            .filter_map(|entry| {
                Some(Key {
                    digest: parse_digest(&entry.sha256)?,
                    identity: Arc::new(self.identity(entry)),
                })
            })
            .collect();
        self.keys.store(Arc::new(keys));
    }

    fn identity(&self, entry: &ApiKeyEntry) -> Identity {
        let kind = match entry.kind {
            KindName::Human => PrincipalKind::Human,
            KindName::Machine => PrincipalKind::Machine,
        };
        let mut principal = Principal::new(entry.principal.as_str(), kind);
        principal.attributes = entry
            .attributes
            .iter()
            .map(|(name, values)| (name.clone(), values.values()))
            .collect();
        self.claims.for_principal(&self.name, principal)
    }

    /// Looks the key up by digest, comparing against every key in constant time.
    pub fn authenticate(&self, key: &str) -> Outcome {
        let presented = digest(key);
        let keys = self.keys.load();
        let mut found: Option<&Arc<Identity>> = None;
        for candidate in keys.iter() {
            let equal: bool = candidate.digest.ct_eq(&presented).into();
            if equal && found.is_none() {
                found = Some(&candidate.identity);
            }
        }
        match found {
            Some(identity) => Outcome::Authenticated(Arc::clone(identity)),
            None => Outcome::Rejected(DenyReason::UnknownApiKey),
        }
    }

    /// The provider's name, for the host's log lines.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Whether keys come from a file a host's runner re-reads.
    pub fn reloads(&self) -> bool {
        self.file.is_some()
    }

    /// The `keys_file`, if any.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// How often the runner looks at the file's modification time (`reload_seconds`).
    pub fn reload_every(&self) -> Duration {
        self.reload
    }

    /// Installs the keys of the file's new `bytes` beside the configured ones, returning how many the file
    /// holds; a broken file changes nothing (the keys loaded before stay).
    pub fn reload(&self, bytes: &[u8]) -> Result<usize, KeysFileError> {
        let path = self.file.as_deref().unwrap_or(Path::new(""));
        let entries = parse_keys_file(path, bytes)?;
        let count = entries.len();
        self.install(entries);
        Ok(count)
    }
}

fn parse_keys_file(path: &Path, bytes: &[u8]) -> Result<Vec<ApiKeyEntry>, KeysFileError> {
    let entries: Vec<ApiKeyEntry> =
        serde_yaml_ng::from_slice(bytes).map_err(|e| KeysFileError::Invalid {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    for (i, entry) in entries.iter().enumerate() {
        if parse_digest(&entry.sha256).is_none() || entry.principal.is_empty() {
            return Err(KeysFileError::Invalid {
                path: path.to_owned(),
                message: format!(
                    "entry {i}: `sha256` must be 64 hex digits and `principal` non-empty"
                ),
            });
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_round_trip() {
        let printed = hash_key("s3cr3t");
        assert!(printed.starts_with("sha256:"));
        assert_eq!(parse_digest(&printed), Some(digest("s3cr3t")));
        assert_eq!(parse_digest(&printed[7..]), Some(digest("s3cr3t")));
        assert_eq!(parse_digest("sha256:xyz"), None);
        assert_eq!(parse_digest(&"g".repeat(64)), None);
    }

    #[test]
    fn keys_authenticate_by_digest_only() {
        let config: ApiKeyConfig = serde_yaml_ng::from_str(&format!(
            "keys:\n  - {{sha256: '{}', principal: ci-bot, attributes: {{scopes: 'read:data write:data'}}}}",
            hash_key("k-123")
        ))
        .unwrap();
        let sources = Sources::new(Arc::new(crate::config::MemoryFiles::default()));
        let keys = ApiKeys::new(Arc::from("keys"), &config, &BTreeMap::new(), &sources).unwrap();
        match keys.authenticate("k-123") {
            Outcome::Authenticated(id) => {
                assert_eq!(id.subject.as_deref(), Some("ci-bot"));
                assert_eq!(id.scopes, "read:data write:data");
                assert_eq!(id.kind, PrincipalKind::Machine);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            keys.authenticate("k-124"),
            Outcome::Rejected(DenyReason::UnknownApiKey)
        );
    }
}
