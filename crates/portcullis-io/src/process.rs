//! What a host reads from its process: environment variables and files ([`ProcessFiles`], the engine's
//! `Files`); and the environment of a runtime that is not served ([`env`]: the process's files, reqwest,
//! keys on disk). The configuration itself is read by `config_source`.
//!
//! Everything here does I/O; the engine itself never does.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use portcullis_core::clock::Clock;
use portcullis_core::config::{Files, Sources};
use portcullis_core::Env;

use crate::http::ReqwestUpstream;
use crate::keys::FileKeys;

/// The process's environment variables and files.
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

/// Secrets and files from the process.
pub fn sources() -> Sources {
    Sources::new(Arc::new(ProcessFiles))
}

/// Files from the process, environment variables from `vars` only (tests).
pub fn sources_with(vars: HashMap<String, String>) -> Sources {
    sources().with_vars(vars)
}

/// An environment for a runtime that is not served (`explain`, `validate-config`, tests): the process's
/// files with `sources`, reqwest, generated keys in their state directory, no metrics, an empty
/// denylist of its own.
pub fn env(clock: Clock, sources: Sources) -> Env {
    Env::new(
        clock,
        sources,
        Arc::new(ReqwestUpstream::new()),
        Arc::new(FileKeys),
    )
}
