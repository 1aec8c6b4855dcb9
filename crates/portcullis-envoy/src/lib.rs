//! portcullis-envoy: the portcullis decision engine inside Envoy, as an HTTP filter of Envoy's
//! dynamic-modules extension (`envoy.extensions.filters.http.dynamic_modules`, Envoy 1.40, ABI `v0.2.0`).
//!
//! Envoy loads `libportcullis_envoy.so` through `ENVOY_DYNAMIC_MODULES_SEARCH_PATH` with
//! `dynamic_module_config: {name: portcullis_envoy}` and `filter_name: portcullis`; the filter's
//! `filter_config` is a `google.protobuf.StringValue` holding YAML or JSON, `{config_file: PATH}` or
//! `{config: {...}}` (see [`settings`]). There is no gRPC hop: the request is decided on Envoy's worker
//! thread by the same [`portcullis_core::Runtime`] the server uses, and its answer is written onto the
//! stream (an allow: identity headers set, client copies removed; a denial: a local reply).
//!
//! # Layout
//! - `ffi`: the C ABI, and the only `unsafe` code: our declarations of the callbacks we use, the event
//!   hooks Envoy calls, each catching panics (a panic answers 500, never lets a request through). It
//!   hands safe types to the modules below.
//! - `settings`: the filter config (`config_file` / `config`) into a validated portcullis `Config`, the
//!   sections the module does not serve refused or ignored with a message.
//! - `host`: the module's side of the engine's seams (files and environment variables, Envoy's log).
//! - `runner`: the background thread: key set refreshes, API key file reloads and upstream HTTP calls.
//!
//! The seams themselves (reqwest upstream, process files, background runners) are the server's, from
//! the `portcullis-io` package; the module links no server crate (tonic, axum, prometheus-client,
//! clap, redis).
//! - `filter`: one stream: the request headers into a `RequestView`, the decision, the answer written
//!   through the [`filter::Stream`] trait (Envoy's stream in production, a fake in tests).
//!
//! # Limits of this version
//! Key sets behind `jwks_uri` or discovery are fetched and refreshed in the background. A decision
//! that waits for an upstream call (an unknown `kid`, introspection, a webhook, GitHub, TokenReview)
//! pauses the stream and is resumed on its worker when the answer comes (`filter`, `ffi`). A route's
//! `DynamicModuleFilterPerRoute` picks the portcullis route or switches the filter off; a route name
//! is checked when a request uses it (Envoy gives the per-route hook no filter config). A `config_file`
//! is reloaded when it changes, without `serve`'s `reload_allow_weakening` guard. The decision log
//! goes to Envoy's log (`host::DecisionLines`). Not yet: mTLS and `envoy_jwt` from Envoy's connection
//! and metadata, cache and upstream metrics, `source.address` and `trace.id` in the decision log.

// The unit tests link no Envoy: they test the safe layers through `filter::Stream`.
#[cfg(not(test))]
mod ffi;
pub mod filter;
pub mod host;
pub mod runner;
pub mod settings;

/// The ABI version this build is written against (Envoy 1.40's `abi_version.h`). Envoy 1.40 loads a
/// module that returns it; Envoy 1.36 compares it with its own ABI hash and refuses the module.
pub const ABI_VERSION: &str = "v0.2.0";
