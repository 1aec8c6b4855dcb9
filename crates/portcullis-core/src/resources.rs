//! Protected resource metadata (RFC 9728): each configured resource's JSON document, built once, served
//! at `/.well-known/oauth-protected-resource` + the resource's path on the admin port and, through a
//! Check for that path, on the protected host itself, without asking for a token.

use serde_json::json;

use crate::config::resources::{metadata_path, ResourceConfig};

/// Every resource's document by its well-known path.
#[derive(Debug, Default)]
pub struct Resources {
    documents: Box<[(Box<str>, Box<str>)]>,
}

// === impl Resources ===

impl Resources {
    pub fn new(config: &[ResourceConfig]) -> Resources {
        let documents = config
            .iter()
            .filter_map(|r| {
                let path = metadata_path(&r.resource)?;
                let mut doc = json!({
                    "resource": r.resource,
                    "bearer_methods_supported": r.bearer_methods_supported,
                });
                if !r.authorization_servers.is_empty() {
                    doc["authorization_servers"] = json!(r.authorization_servers);
                }
                if !r.scopes_supported.is_empty() {
                    doc["scopes_supported"] = json!(r.scopes_supported);
                }
                if r.dpop_bound_access_tokens_required {
                    doc["dpop_bound_access_tokens_required"] = json!(true);
                }
                Some((path.into(), doc.to_string().into()))
            })
            .collect();
        Resources { documents }
    }

    /// The document served at `path` (the request path without its query), if any.
    pub fn document(&self, path: &str) -> Option<&str> {
        if !path.starts_with(crate::config::resources::WELL_KNOWN) {
            return None;
        }
        self.documents
            .iter()
            .find(|(p, _)| **p == *path)
            .map(|(_, doc)| &**doc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_sit_at_the_well_known_path_of_their_resource() {
        let config: Vec<ResourceConfig> = serde_yaml_ng::from_str(
            "[{resource: 'https://api.example.com/mcp/data', authorization_servers: ['https://idp.example.com/'], scopes_supported: [read], dpop_bound_access_tokens_required: true},
              {resource: 'https://api.example.com'}]",
        )
        .unwrap();
        let r = Resources::new(&config);
        let doc: serde_json::Value = serde_json::from_str(
            r.document("/.well-known/oauth-protected-resource/mcp/data")
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            doc,
            json!({
                "resource": "https://api.example.com/mcp/data",
                "authorization_servers": ["https://idp.example.com/"],
                "scopes_supported": ["read"],
                "bearer_methods_supported": ["header"],
                "dpop_bound_access_tokens_required": true,
            })
        );
        assert!(r
            .document("/.well-known/oauth-protected-resource")
            .is_some());
        assert!(r
            .document("/.well-known/oauth-protected-resource/mcp")
            .is_none());
        assert!(r.document("/mcp/data").is_none());
    }
}
