//! `resources:`: the protected resources described by RFC 9728 metadata documents.

use serde::Deserialize;

use super::Problems;

/// The metadata document's well-known prefix (RFC 9728 §3).
pub const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// One protected resource (RFC 9728 §2).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceConfig {
    /// The resource identifier: an `https` URL without query or fragment, e.g.
    /// `https://api.example.com/mcp/data`. Routes name it with `resource:`. Required.
    pub resource: String,
    /// The issuers of tokens for it (`authorization_servers`). Defaults to none.
    #[serde(default)]
    pub authorization_servers: Vec<String>,
    /// The scopes a client may ask for (`scopes_supported`). Defaults to none.
    #[serde(default)]
    pub scopes_supported: Vec<String>,
    /// How tokens may be sent: `header`, `body`, `query` (`bearer_methods_supported`). Defaults to
    /// `[header]`.
    #[serde(default = "default_bearer_methods")]
    pub bearer_methods_supported: Vec<String>,
    /// Tokens must be DPoP-bound (`dpop_bound_access_tokens_required`). Defaults to false.
    #[serde(default)]
    pub dpop_bound_access_tokens_required: bool,
}

fn default_bearer_methods() -> Vec<String> {
    vec!["header".to_owned()]
}

/// The path of a resource's metadata document on its host: the well-known prefix, then the resource's
/// own path (RFC 9728 §3.1), e.g. `/.well-known/oauth-protected-resource/mcp/data`. `None` for a resource
/// that is not an absolute URL.
pub fn metadata_path(resource: &str) -> Option<String> {
    let url = url::Url::parse(resource).ok()?;
    url.host_str()?;
    let path = url.path().trim_end_matches('/');
    Some(format!("{WELL_KNOWN}{path}"))
}

/// Checks every resource, and that routes name only configured ones (`routes`: each route's path and
/// its `resource`).
pub(crate) fn validate<'a>(
    problems: &mut Problems,
    resources: &[ResourceConfig],
    routes: impl Iterator<Item = (String, Option<&'a str>)>,
) {
    let mut seen = Vec::new();
    for (i, r) in resources.iter().enumerate() {
        let path = format!("resources[{i}]");
        let ok = url::Url::parse(&r.resource).ok().is_some_and(|u| {
            let loopback = matches!(u.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
            (u.scheme() == "https" || (u.scheme() == "http" && loopback))
                && u.host_str().is_some()
                && u.query().is_none()
                && u.fragment().is_none()
        });
        if !ok || r.resource.contains(['"', '\\']) {
            problems.add(
                format!("{path}.resource"),
                "must be an https URL without query or fragment (RFC 9728 §1.2)",
            );
        } else if let Some(well_known) = metadata_path(&r.resource) {
            if seen.contains(&well_known) {
                problems.add(
                    format!("{path}.resource"),
                    "another resource has the same path: each needs its own metadata document",
                );
            }
            seen.push(well_known);
        }
        for (j, server) in r.authorization_servers.iter().enumerate() {
            if url::Url::parse(server).is_err() {
                problems.add(
                    format!("{path}.authorization_servers[{j}]"),
                    "must be an issuer URL",
                );
            }
        }
        for (j, method) in r.bearer_methods_supported.iter().enumerate() {
            if !matches!(method.as_str(), "header" | "body" | "query") {
                problems.add(
                    format!("{path}.bearer_methods_supported[{j}]"),
                    "must be one of header, body, query (RFC 9728 §2)",
                );
            }
        }
    }
    for (path, resource) in routes {
        let Some(resource) = resource else { continue };
        if !resources.iter().any(|r| r.resource == resource) {
            problems.add(
                format!("{path}.resource"),
                format!("`{resource}` is not one of `resources[].resource`"),
            );
        }
    }
}
