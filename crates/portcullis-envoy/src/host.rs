//! The module's side of the engine's seams: the process's files and environment variables (secrets,
//! `jwks_file`, `keys_file`, a `config_file`), and where the module's own messages go (Envoy's log).

use std::path::Path;
use std::sync::Arc;

use portcullis_core::config::{Files, Sources};

/// The Envoy process's environment variables and files.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessFiles;

impl Files for ProcessFiles {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        std::fs::read(path)
    }
}

/// Secrets and files from the Envoy process.
pub fn sources() -> Sources {
    Sources::new(Arc::new(ProcessFiles))
}

/// The levels of Envoy's log the module writes at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

/// Writes `message` to Envoy's log (component `dynamic_modules`). Never pass a token or a secret.
pub fn log(level: Level, message: &str) {
    #[cfg(not(test))]
    crate::ffi::log(level, message);
    #[cfg(test)]
    eprintln!("{level:?}: {message}");
}
