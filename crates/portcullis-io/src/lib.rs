//! portcullis-io: the host side of the engine's seams (`portcullis_core::env`), shared by the server (the
//! root package) and the Envoy module (`portcullis-envoy`): the process's environment variables and files
//! ([`ProcessFiles`]), HTTP calls over reqwest ([`ReqwestUpstream`]), the identity token's keys in a
//! private state directory ([`FileKeys`]), and the background runners that keep a runtime fresh (key set
//! refreshes, API key file reloads: [`spawn_background`]).
//!
//! Everything here does I/O; the engine itself never does. It exists as a package because the module
//! must not link the server: it depends on `portcullis-core`, tokio and reqwest, never on tonic, axum,
//! prometheus-client, clap or redis.
//!
//! # Layout
//! Each module imports only `portcullis-core` and the modules above it in this list; nothing imports
//! back into the server or the module. This file declares them and re-exports what hosts use.
//! - `http`: [`ReqwestUpstream`], the engine's `Upstream` (per-provider TLS, bounded bodies, redirects,
//!   bearer token files), calling on the awaiting task's runtime (the server) or on a host's background
//!   runtime ([`ReqwestUpstream::calls_on`], the module).
//! - `keys`: [`FileKeys`], the engine's `KeyStorage`, and [`write_private`].
//! - `runners`: [`spawn_background`], the key set refreshers and API key file reloaders on tokio;
//!   [`sleep_from`], a wait a test's manual clock ends.
//! - `process`: [`ProcessFiles`] and [`sources`] (secrets and files from the process), [`env`] (the
//!   environment of a runtime that is not served: reqwest, keys on disk).
//! - `config_source`: the configuration `--config` names, a file or a directory of fragments
//!   ([`ConfigBytes`], [`load_config`], [`read_config_text`]): read, digested for the reloader, its newest
//!   modification time.
//!
//! Not here: the Redis state (the server's `state/redis`) stays in the root package. Only the server
//! shares state between replicas (the module refuses a `state` section), and redis must stay out of the
//! module's dependency tree; it moves here when a host besides the server needs it.

mod config_source;
mod http;
mod keys;
mod process;
mod runners;

pub use self::config_source::{
    is_fragment_name, load_config, newest_modification, read_config_text, ConfigBytes, ConfigText,
};
pub use self::http::{CallRuntime, ReqwestUpstream};
pub use self::keys::{write_private, FileKeys};
pub use self::process::{env, sources, sources_with, ProcessFiles};
pub use self::runners::{sleep_from, spawn_background};
