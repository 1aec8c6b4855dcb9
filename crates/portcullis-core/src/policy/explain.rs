//! Explanations of a policy decision for `explain` and for permissive mode's log line: which routes were
//! tried, which condition decided each, and every requirement of the chosen route with its result. They
//! name requirements, never token contents, and serialize to JSON.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value as Json;

use super::Mode;

/// One condition or requirement and whether it held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExplainStep {
    /// What was checked, e.g. `path_glob /tenants/*/admin` or `permissions all_of [admin:tenant]`.
    pub check: String,
    pub passed: bool,
    /// The [`UnmetReason`](super::UnmetReason) label of a failed requirement.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unmet: Option<&'static str>,
    /// For an expression: each variable path it reads and its value (credentials redacted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inputs: Option<BTreeMap<String, Json>>,
    /// For an expression: `true`, `false`, or `error: …`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

// === impl ExplainStep ===

impl ExplainStep {
    pub(super) fn new(check: String, passed: bool, unmet: Option<&'static str>) -> ExplainStep {
        ExplainStep {
            check,
            passed,
            unmet,
            inputs: None,
            value: None,
        }
    }
}

/// One route considered for a request, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteTrace {
    pub route: String,
    pub matched: bool,
    /// Each of the route's match conditions (all of them, not only up to the first that failed).
    pub conditions: Vec<ExplainStep>,
}

/// How a request found its route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteChoice {
    /// The route that applies (`default` when none matched).
    pub route: String,
    /// Its mode (the route's own or the global one).
    pub mode: Mode,
    /// Its providers; `None` means all.
    pub providers: Option<Vec<String>>,
    pub allow_anonymous: bool,
    /// The routes tried, up to and including the one that matched.
    pub tried: Vec<RouteTrace>,
}
