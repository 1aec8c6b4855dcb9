//! portcullis: an Envoy external authorization (ext_authz v3) service.
//!
//! # Layout
//! - [`pb`]: generated protobuf (Envoy ext_authz v3, google.rpc), used only at the edge.
//! - [`config`]: the YAML configuration, its validation with field paths, and secret references.
//! - [`request`]: our borrowed view of a check request (method, path, host, headers).
//! - [`credential`]: finding the bearer token in a request.
//! - [`providers`]: the provider contract and chain; [`providers::jwt`] validates JWTs,
//!   [`providers::jwks`] fetches and refreshes key sets.
//! - [`decision`]: what a check decides: allow with an identity, deny with a reason, or error.
//! - [`policy`]: per-route rules: which route a request takes, what its identity must have (scopes, RBAC
//!   permissions, claims, organization, principal kind, step-up), 401/403 answers, explanations.
//! - [`authorizer`]: the decision pipeline the server and tools share.
//! - [`server`]: gRPC Check, health and reflection; admin HTTP; translation to and from Envoy's types.
//! - [`client`]: the `check` command's gRPC client.
//! - [`dev`]: the embedded development issuer (`serve --dev`, `token`).
//! - [`metrics`]: counters for `/metrics`.
//! - [`clock`]: injectable wall-clock time.
//! - [`telemetry`]: log output.

#![forbid(unsafe_code)]

pub mod authorizer;
pub mod bench;
pub mod client;
pub mod clock;
pub mod config;
pub mod credential;
pub mod decision;
pub mod dev;
pub mod metrics;
pub mod pb;
pub mod policy;
pub mod providers;
pub mod request;
pub mod server;
pub mod telemetry;
