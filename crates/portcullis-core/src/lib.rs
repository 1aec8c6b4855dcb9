//! portcullis-core: the decision engine of portcullis, with no I/O of its own.
//!
//! It builds a [`Runtime`] from an already-parsed [`Config`] and an [`Env`], and decides a request (our
//! borrowed [`RequestView`]) into a [`Verdict`] and a proto-free [`answer::Answer`]. It never opens a file,
//! reads the environment, opens a socket, spawns a thread or task, or sleeps: what it needs from the
//! world comes through the seams in [`env`], given once when a runtime is built:
//! - [`env::Host`]: secrets (environment variables, files), the files a build reads (`jwks_file`,
//!   `keys_file`, `tls.ca_file`), HTTP clients for upstream calls ([`env::HttpClient`]), and the
//!   identity token's key storage;
//! - [`recorder::Recorder`]: cache, upstream and verification counts (Prometheus in the server, Envoy's
//!   stats in the module);
//! - the [`revocation::Denylist`] and the shared "seen once" store ([`dpop::SharedSeen`]) that a host
//!   feeds from wherever it keeps them;
//! - the [`Clock`] and the verification limit.
//!
//! Background work (key set refreshes, API key file reloads) is exposed as plain methods
//! ([`providers::jwks::KeyStore::refresh`], [`providers::api_key::ApiKeys::reload`]) that the host's
//! runners call on their own schedule. The server (the `portcullis` package) is one host; the Envoy
//! module is another.
//!
//! # Layout
//! The modules form layers: each imports only from the layers below it, never from one above.
//!
//! 1. Foundations: `request` (our borrowed view of a check request), `clock` (injectable time),
//!    `recorder` (what the engine counts, as a trait the host implements).
//! 2. What a check is about: `identity` ([`Identity`], the one builder every provider uses; `Prepared`,
//!    the write-once slot a transport keeps its encoding of a cached identity in), `decision` ([`Decision`]
//!    and why a request is denied).
//! 3. `config`: the YAML configuration, read leniently so one pass reports every problem, validation with
//!    field paths, secret references and the `Sources` they resolve through, its JSON Schema
//!    (`config::schema`, what `portcullis config schema` prints), and a configuration in fragments merged
//!    from the texts a host read (`config::fragments`, `--config DIR`).
//! 4. Reading the credential: `credential` (finding it in a request), `dpop` (RFC 9449 proofs, nonces,
//!    replay).
//! 5. Deciding, side by side: `providers` (the contract; `chain` runs it, `build` builds it, `tables`
//!    are its lookups by issuer, place and name, one module per kind), `policy` (compiled routes; `policy/index`: the route index by host and first path
//!    segment), `revocation` (the denylist and Auth0 event mapping),
//!    `resources` (RFC 9728 documents), `identity_token` (the signed identity for the upstream).
//! 6. `authorizer`: route → providers → denylist → policy → mode, into a [`Verdict`].
//! 7. `answer`: a verdict as a proto-free answer (status, headers, challenge, body, metadata).
//! 8. `runtime`: the swappable [`Runtime`]; `decision_log`: one JSON line per decision (tracing target
//!    `portcullis::decision`); `env`: the [`Env`] a runtime is built with (the seams a host implements:
//!    `KeyStorage` here, `Upstream` in `providers::http`, `SharedSeen` in `dpop`, `Recorder`).
//!
//! # Process-wide state
//! A host that loads this crate once (a cdylib in Envoy) shares these between its runtimes: the decision
//! id's nonce and counter (`authorizer`), the answer settings' counter (`answer`), the CEL environment
//! (`policy::expression`), and `Identity::prepared` slots, which hold whichever transport's encoding
//! arrives first (one transport per process).

pub mod answer;
pub mod authorizer;
pub mod clock;
pub mod config;
pub mod credential;
pub mod decision;
pub mod decision_log;
pub mod dpop;
pub mod env;
pub mod identity;
pub mod identity_token;
pub mod policy;
pub mod providers;
pub mod recorder;
pub mod request;
pub mod resources;
pub mod revocation;
pub mod runtime;

pub use crate::authorizer::{Explanation, Verdict};
pub use crate::clock::Clock;
pub use crate::config::{Config, ConfigErrors, LoadError, Problem, Sources};
pub use crate::decision::{Decision, DenyReason};
pub use crate::env::Env;
pub use crate::identity::{Identity, PrincipalKind};
pub use crate::providers::api_key::hash_key;
pub use crate::request::{Headers, RequestView};
pub use crate::runtime::Runtime;

#[cfg(all(feature = "aws-lc-rs", feature = "rust-crypto"))]
compile_error!("enable one crypto backend: `aws-lc-rs` (the default) or `rust-crypto` (with --no-default-features)");
#[cfg(not(any(feature = "aws-lc-rs", feature = "rust-crypto")))]
compile_error!("enable a crypto backend: `aws-lc-rs` (the default) or `rust-crypto`");
