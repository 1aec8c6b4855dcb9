//! portcullis: an Envoy external authorization (ext_authz v3) service.
//!
//! # Layout
//! The modules form layers: each imports only from the layers below it, never from one above.
//!
//! 1. Foundations, importing nothing of ours:
//!    - [`pb`]: the protobuf edge, re-exported from the `portcullis-proto` package (generated Envoy
//!      ext_authz v3 and google.rpc, our `Struct` and the one `Struct` ⇄ JSON pair); used only at the edge
//!      (`server`, `client`).
//!    - `request`: our borrowed view of a check request (method, path, host, headers); header names.
//!    - `clock`: injectable wall-clock time.
//!    - [`telemetry`]: log output and trace spans.
//! 2. What a check is about:
//!    - `identity`: [`Identity`], [`PrincipalKind`] and the one builder every provider uses; `Prepared`,
//!      the write-once slot where an upper layer keeps what it derives from a cached identity.
//!    - `decision`: what a check decides ([`Decision`]) and why a request is denied: credential reasons,
//!      unmet route requirements, unavailability.
//!    - `metrics`, on top of `decision`: the Prometheus families for `/metrics` (prometheus-client) and
//!      the handles providers record cache and upstream metrics through; they live in the server's `App`
//!      and outlive runtimes.
//! 3. `config`: the YAML configuration (server, headers, providers, policy keys, revocation, state,
//!    resources), validation with field paths, secret references. `dev`: the embedded development issuer
//!    and its config.
//! 4. Reading the request's credential, side by side:
//!    - `credential`: finding the credential in a request.
//!    - `dpop`: sender-constrained tokens (RFC 9449): a provider's DPoP mode, the proof check, the
//!      `cnf.jkt` binding, stateless nonces and the `jti` replay check (through `state` when shared).
//! 5. Deciding, side by side:
//!    - `providers`: the provider contract; `providers/chain` runs the chain over a request (who owns
//!      which credential), `providers/build` builds the providers from the configuration (and what a
//!      reload keeps); `providers/jwt` validates JWTs, `providers/jwks`
//!      fetches and refreshes key sets, `providers/http` calls and caches upstreams (per-provider TLS,
//!      bearer tokens), `providers/kubernetes` asks the API server (TokenReview).
//!    - `policy`: compiled routes (matcher, provider indices, requirements, CEL expressions, challenges,
//!      deny settings).
//!    - `revocation`: the denylist (`sub`, `jti`, `sid`, `client_id` entries) every check reads as a
//!      local copy, and `revocation/auth0` mapping Auth0 log events to entries.
//!    - `state`, on top of `revocation`: what replicas share and outlives a runtime: the denylist's feed
//!      and "seen once" records (DPoP replay, Auth0 redelivery), in memory or in Redis (`state/redis`:
//!      one Redis, Sentinel or Cluster; a stream feed plus resync). The decision pipeline and everything above may use it.
//!    - `resources`: the RFC 9728 protected resource metadata documents.
//!    - `identity_token`: the signed identity token for the upstream, its keys (generated, persisted,
//!      rotated) and its key set.
//! 6. `authorizer`: the decision pipeline (route → providers → denylist → policy → mode) and the
//!    [`Verdict`].
//! 7. `answer`: a verdict as a proto-free answer: status, headers to set and remove, challenge, body,
//!    metadata.
//! 8. `runtime`: the swappable [`Runtime`] built from one `Config`: providers, policy, answer settings,
//!    the decision log's sampling. `decision_log`: one JSON line per decision (target
//!    `portcullis::decision`), below `runtime`, which holds it.
//! 9. [`server`]: gRPC Check, health and reflection; the HTTP forward-auth listener (`server/http`: nginx,
//!    Traefik, Caddy, Envoy `http_service`), deciding through the same `server/check` function as gRPC;
//!    the admin HTTP port (with the revocation admin API and the Auth0 log stream receiver);
//!    `server/grpc`: the Check endpoint, reading the request's bytes straight into our request view
//!    (`server/wire`); `server/translate`: our answer as Envoy's protobuf; `server/reload`: hot reload
//!    of the configuration file (watch, validate, build, swap the runtime) and its metrics;
//!    `server/tls`: TLS (and client certificates) on the listeners, reloaded when its files change.
//! 10. [`client`] (the `check` command's gRPC client) and [`cli`] (every command's logic; `main.rs` only
//!     parses and dispatches; `cli/import_llama` for `import llama-stack`). The `bench` load generator is
//!     the `portcullis-bench` package: it talks to portcullis as a separate process, over [`pb`] only.
//! 11. `fuzzing` (the `fuzzing` feature only): thin entry points for the `cargo fuzz` targets in `fuzz/`;
//!     it may import from every layer and nothing imports it.

#![forbid(unsafe_code)]

/// The protobuf edge, in its own package (`crates/portcullis-proto`).
pub use portcullis_proto as pb;

mod answer;
mod authorizer;
pub mod cli;
pub mod client;
mod clock;
mod config;
mod credential;
mod decision;
mod decision_log;
mod dev;
mod dpop;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod identity;
mod identity_token;
mod metrics;
mod policy;
mod providers;
mod request;
mod resources;
mod revocation;
mod runtime;
pub mod server;
mod state;
pub mod telemetry;

pub use crate::authorizer::{Explanation, Verdict};
pub use crate::clock::Clock;
pub use crate::config::{Config, ConfigErrors, LoadError, Problem, SecretSource, ServerTlsConfig};
pub use crate::decision::{Decision, DenyReason};
pub use crate::identity::{Identity, PrincipalKind};
pub use crate::providers::api_key::hash_key;
pub use crate::request::{Headers, RequestView};
pub use crate::runtime::Runtime;
pub use crate::state::{SharedState, StateError};
