//! Secret references in the configuration: `{env: NAME}` or `{file: PATH}`, never the secret inline.
//!
//! A [`Secret`] never prints its value: `Debug` shows `Secret(<redacted>)`.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Where a secret comes from: `{env: NAME}` or `{file: PATH}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawSecretRef")]
pub enum SecretRef {
    /// An environment variable of the portcullis process.
    Env(String),
    /// A file (e.g. a mounted Kubernetes Secret); one trailing newline is dropped.
    File(PathBuf),
}

/// What the YAML holds where a secret reference goes: a mapping with exactly one of `env` or `file`, or
/// anything else, which is explained (never echoed: it may be the secret itself).
#[derive(Deserialize)]
#[serde(untagged)]
enum RawSecretRef {
    Reference(ReferenceFields),
    Other(serde_yaml_ng::Value),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReferenceFields {
    env: Option<String>,
    file: Option<PathBuf>,
}

// === impl SecretRef ===

impl TryFrom<RawSecretRef> for SecretRef {
    type Error = &'static str;

    fn try_from(raw: RawSecretRef) -> Result<Self, Self::Error> {
        const SHAPE: &str =
            "a secret reference is `{env: NAME}` or `{file: PATH}`, exactly one of them";
        match raw {
            RawSecretRef::Reference(ReferenceFields {
                env: Some(name),
                file: None,
            }) if !name.is_empty() => Ok(SecretRef::Env(name)),
            RawSecretRef::Reference(ReferenceFields {
                env: None,
                file: Some(path),
            }) if !path.as_os_str().is_empty() => Ok(SecretRef::File(path)),
            RawSecretRef::Reference(_) => Err(SHAPE),
            RawSecretRef::Other(serde_yaml_ng::Value::Mapping(_)) => Err(SHAPE),
            RawSecretRef::Other(_) => Err(
                "a secret is never written in the configuration: put it in an environment variable \
                 (`{env: NAME}`) or a file, e.g. a mounted Kubernetes Secret (`{file: PATH}`)",
            ),
        }
    }
}

/// A resolved secret value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

// === impl Secret ===

impl Secret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Secret {
        Secret(bytes.into())
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Why a secret reference could not be resolved. The message names the reference, never the value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable `{0}` is not set")]
    EnvMissing(String),
    #[error("cannot read secret file `{path}`: {source}")]
    FileUnreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the secret from {0} is empty")]
    Empty(String),
}

/// What a host reads for a build: environment variables and files. The server reads the process's; the
/// Envoy module its own; tests a map.
pub trait Files: Send + Sync {
    /// An environment variable's value, `None` when it is not set.
    fn var(&self, name: &str) -> Option<String>;
    /// A file's bytes.
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>>;
}

/// Where secrets and build-time files come from: the host's [`Files`], with environment variables
/// optionally replaced by a map (tests pass values in this way instead of touching the process
/// environment).
#[derive(Clone)]
pub struct Sources {
    files: std::sync::Arc<dyn Files>,
    vars: Option<std::sync::Arc<std::collections::HashMap<String, String>>>,
}

// === impl Sources ===

impl Sources {
    pub fn new(files: std::sync::Arc<dyn Files>) -> Sources {
        Sources { files, vars: None }
    }

    /// The same files, with environment variables looked up in `vars` only.
    pub fn with_vars(mut self, vars: std::collections::HashMap<String, String>) -> Sources {
        self.vars = Some(std::sync::Arc::new(vars));
        self
    }

    fn env(&self, name: &str) -> Option<String> {
        match &self.vars {
            Some(map) => map.get(name).cloned(),
            None => self.files.var(name),
        }
    }

    /// A file's bytes, through the host.
    pub fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        self.files.read(path)
    }
}

/// Files and variables held in memory: for tests, and for hosts that have no file system of their own.
#[derive(Debug, Default, Clone)]
pub struct MemoryFiles {
    pub vars: std::collections::HashMap<String, String>,
    pub files: std::collections::HashMap<PathBuf, Vec<u8>>,
}

impl Files for MemoryFiles {
    fn var(&self, name: &str) -> Option<String> {
        self.vars.get(name).cloned()
    }

    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
    }
}

impl fmt::Debug for Sources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sources")
            .field("vars", &self.vars.as_ref().map(|v| v.len()))
            .finish_non_exhaustive()
    }
}

// === impl SecretRef ===

impl SecretRef {
    pub fn resolve(&self, source: &Sources) -> Result<Secret, SecretError> {
        let (bytes, origin) = match self {
            SecretRef::Env(name) => (
                source
                    .env(name)
                    .ok_or_else(|| SecretError::EnvMissing(name.clone()))?
                    .into_bytes(),
                format!("environment variable `{name}`"),
            ),
            SecretRef::File(path) => (
                read_file(source, path)?,
                format!("file `{}`", path.display()),
            ),
        };
        if bytes.is_empty() {
            return Err(SecretError::Empty(origin));
        }
        Ok(Secret(bytes))
    }
}

fn read_file(source: &Sources, path: &Path) -> Result<Vec<u8>, SecretError> {
    let mut bytes = source
        .read(path)
        .map_err(|source| SecretError::FileUnreadable {
            path: path.to_owned(),
            source,
        })?;
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inline_secret_is_explained_without_echoing_it() {
        let error = crate::config::Config::from_yaml_str(
            "providers:\n  - {name: h, type: jwt, issuer: i, audiences: [x], algorithms: [HS256], shared_secret: hunter2-very-secret}",
        )
        .unwrap_err()
        .0;
        let text = format!("{error:?}");
        assert!(text.contains("providers[0].shared_secret"), "{text}");
        assert!(
            text.contains("never written in the configuration"),
            "{text}"
        );
        assert!(!text.contains("hunter2"), "the secret is echoed: {text}");
        let error = crate::config::Config::from_yaml_str(
            "providers:\n  - {name: h, type: jwt, issuer: i, audiences: [x], algorithms: [HS256], shared_secret: {env: A, file: /b}}",
        )
        .unwrap_err()
        .0;
        assert!(
            format!("{error:?}").contains("exactly one of them"),
            "{error:?}"
        );
    }

    #[test]
    fn env_and_file_references_resolve() {
        let files = MemoryFiles {
            files: [
                ("/run/s".into(), b"hunter2\n".to_vec()),
                ("/run/e".into(), b"\n".to_vec()),
            ]
            .into(),
            ..MemoryFiles::default()
        };
        let source = Sources::new(std::sync::Arc::new(files))
            .with_vars([("K".to_owned(), "v1".to_owned())].into());
        assert_eq!(
            SecretRef::Env("K".into())
                .resolve(&source)
                .unwrap()
                .expose(),
            b"v1"
        );
        let err = SecretRef::Env("MISSING".into())
            .resolve(&source)
            .unwrap_err();
        assert_eq!(err.to_string(), "environment variable `MISSING` is not set");

        assert_eq!(
            SecretRef::File("/run/s".into())
                .resolve(&source)
                .unwrap()
                .expose(),
            b"hunter2"
        );
        assert!(matches!(
            SecretRef::File("/run/missing".into()).resolve(&source),
            Err(SecretError::FileUnreadable { .. })
        ));
        assert!(matches!(
            SecretRef::File("/run/e".into()).resolve(&source),
            Err(SecretError::Empty(_))
        ));
    }

    #[test]
    fn references_parse_from_yaml() {
        let parse = |y: &str| serde_yaml_ng::from_str::<SecretRef>(y);
        assert_eq!(parse("{env: A}").unwrap(), SecretRef::Env("A".into()));
        assert_eq!(
            parse("{file: /run/s}").unwrap(),
            SecretRef::File("/run/s".into())
        );
        assert!(parse("{env: A, file: /b}").is_err());
        assert!(parse("{value: x}").is_err());
        assert!(parse("inline-secret").is_err());
    }

    #[test]
    fn secrets_never_print() {
        assert_eq!(
            format!("{:?}", Secret::new("hunter2")),
            "Secret(<redacted>)"
        );
    }
}
