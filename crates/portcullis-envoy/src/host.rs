//! The module's side of the engine's seams: the process's files and environment variables (secrets,
//! `jwks_file`, `keys_file`, a `config_file`; the server's own, from `portcullis-io`), and where the
//! module's own messages go (Envoy's log).

pub use portcullis_io::{sources, ProcessFiles};

/// The levels of Envoy's log the module writes at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

/// Where [`log`] writes: Envoy's log once the ABI layer has found its callbacks at program init (it
/// registers itself here, so this module never imports it); stderr until then and in tests.
static LOG: std::sync::OnceLock<fn(Level, &str)> = std::sync::OnceLock::new();

/// Sends the module's messages to `writer` from now on (the ABI layer's Envoy log; set once).
pub fn set_log(writer: fn(Level, &str)) {
    let _ = LOG.set(writer);
}

/// Writes `message` to Envoy's log (component `dynamic_modules`). Never pass a token or a secret.
pub fn log(level: Level, message: &str) {
    match LOG.get() {
        Some(writer) => writer(level, message),
        None => eprintln!("{level:?}: {message}"),
    }
}
