//! portcullis: an Envoy external authorization (ext_authz v3) service, and the `portcullis` binary.
//!
//! The decisions themselves are made by the I/O-free engine in the `portcullis-core` package (config,
//! identity, credential, DPoP, providers, policy, revocation's denylist, authorizer, answer, runtime);
//! this package is its server host. Its modules are available here under their old paths
//! (`crate::config`, `crate::providers`, ...) so the server reads as before.
//!
//! # Layout
//! Packages: `portcullis-proto` (the protobuf edge), `portcullis-core` (the engine) and `portcullis-io`
//! (the engine's seams over tokio and reqwest, shared with the Envoy module) import nothing of this
//! package; this package imports them. Inside it, the modules form layers: each imports only from
//! the layers below it, never from one above.
//!
//! 1. Foundations: [`pb`] (re-exported `portcullis-proto`: generated Envoy ext_authz v3 and google.rpc,
//!    our `Struct` and the one `Struct` ⇄ JSON pair, used only at the edge: `server`, `client`);
//!    [`telemetry`] (log output and trace spans; the decision log's target comes from the engine).
//! 2. `metrics`: the Prometheus families for `/metrics` (prometheus-client); `Metrics` is the engine's
//!    `Recorder` for every runtime the server builds, and outlives them.
//! 3. [`io`] (re-exported `portcullis-io`, which the Envoy module links too): the host's side of the
//!    engine's seams: the process's environment and files, HTTP calls over reqwest (per-provider TLS,
//!    bounded bodies, bearer token files), the identity token's keys on disk, and the runners that keep a
//!    runtime fresh (key set refreshes, API key file reloads). `dev`: the embedded development issuer and
//!    its config.
//! 4. `state`: what replicas share and outlives a runtime: the denylist's feed and "seen once" records
//!    (DPoP replay, Auth0 redelivery), in memory or in Redis (`state/redis`: one Redis, Sentinel or
//!    Cluster; a stream feed plus resync; here, not in `portcullis-io`, because only the server shares
//!    state); it feeds the engine's `Denylist` and implements its `SharedSeen`.
//! 5. [`server`]: gRPC Check, health and reflection; the HTTP forward-auth listener (`server/http`: nginx,
//!    Traefik, Caddy, Envoy `http_service`), deciding through the same `server/check` function as gRPC;
//!    the admin HTTP port (with the revocation admin API and the Auth0 log stream receiver);
//!    `server/grpc`: the Check endpoint, reading the request's bytes straight into the engine's request
//!    view (`pb::wire`, in `portcullis-proto`); `pb::translate`: an answer as Envoy's protobuf; `server/reload`: hot reload
//!    of the configuration file (watch, validate, build with the server's `Env`, swap the runtime);
//!    `server/tls`: TLS (and client certificates) on the listeners, reloaded when its files change.
//!    `App` builds each runtime with one `Env` (state, metrics, HTTP clients, key storage): there is no
//!    second wiring step.
//! 6. [`client`] (the `check` command's gRPC client) and [`cli`] (every command's logic; `main.rs` only
//!    parses and dispatches; `cli/import_llama` for `import llama-stack`). The `bench` load generator is
//!    the `portcullis-bench` package: it talks to portcullis as a separate process, over [`pb`] only.
//! 7. `fuzzing` (the `fuzzing` feature only): thin entry points for the `cargo fuzz` targets in `fuzz/`;
//!    it may import from every layer and nothing imports it.

#![forbid(unsafe_code)]

/// The protobuf edge, in its own package (`crates/portcullis-proto`).
pub use portcullis_proto as pb;

/// The engine's seams over tokio and reqwest, in their own package (`crates/portcullis-io`).
pub use portcullis_io as io;

pub mod cli;
pub mod client;
mod dev;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod metrics;
pub mod server;
mod state;
pub mod telemetry;

// The decision engine, under the paths the server's modules have always used (`crate::config`, ...).
pub use portcullis_core;
use portcullis_core::{
    answer, authorizer, clock, config, decision, decision_log, dpop, identity, policy, providers,
    request, revocation, runtime,
};

pub use crate::authorizer::{Explanation, Verdict};
pub use crate::clock::Clock;
pub use crate::config::{Config, ConfigErrors, LoadError, Problem, ServerTlsConfig, Sources};
pub use crate::decision::{Decision, DenyReason};
pub use crate::identity::{Identity, PrincipalKind};
pub use crate::providers::api_key::hash_key;
pub use crate::request::{Headers, RequestView};
pub use crate::runtime::Runtime;
pub use crate::state::{SharedState, StateError};
pub use portcullis_core::Env;
