//! The filter config: the `google.protobuf.StringValue` of the filter's `filter_config`, YAML or JSON,
//! holding exactly one of
//! - `config_file: PATH`: an ordinary portcullis configuration file, read and validated as
//!   `portcullis serve --config` does;
//! - `config: {...}`: the same configuration inline.
//!
//! Sections the module does not serve: `server` (listeners; Envoy is the listener) is ignored with a
//! warning; `state` and `revocation` (Redis, the admin API, the Auth0 stream) are refused, because a
//! configuration that names them expects revocations this module would not see.

use std::path::PathBuf;

use portcullis_core::config::{Problem, RevocationConfig, ServerConfig, StateConfig};
use portcullis_core::{Config, ConfigErrors};
use serde::Deserialize;

use crate::host::Level;

/// Where the portcullis configuration comes from.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterConfig {
    config_file: Option<PathBuf>,
    config: Option<serde_yaml_ng::Value>,
}

/// A configuration the module can serve, with the messages to log about what it ignores.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub notes: Vec<(Level, String)>,
    /// The `config_file` it came from and the SHA-256 of the bytes read (reloaded when they change);
    /// `None` for an inline `config`.
    pub file: Option<(PathBuf, [u8; 32])>,
}

/// SHA-256 of a configuration file's bytes.
pub fn digest(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).into()
}

/// A `config_file`'s bytes (as read now) into a configuration the module can serve.
pub fn load_file(path: &std::path::Path, bytes: Vec<u8>) -> Result<Loaded, ConfigErrors> {
    let hash = digest(&bytes);
    let text = String::from_utf8(bytes).map_err(|_| {
        ConfigErrors(vec![Problem {
            path: "filter_config.config_file".to_owned(),
            message: format!("`{}` is not UTF-8 text", path.display()),
        }])
    })?;
    let mut loaded = servable(Config::from_yaml_str(&text)?)?;
    loaded.file = Some((path.to_owned(), hash));
    Ok(loaded)
}

/// Parses the filter config and the portcullis configuration it names; every problem with the path of
/// its field (`filter_config.…` for the filter config itself).
pub fn load(
    filter_config: &[u8],
    files: &dyn portcullis_core::config::Files,
) -> Result<Loaded, ConfigErrors> {
    let problem = |path: &str, message: String| {
        ConfigErrors(vec![Problem {
            path: path.to_owned(),
            message,
        }])
    };
    let text = std::str::from_utf8(filter_config)
        .map_err(|_| problem("filter_config", "is not UTF-8 text".to_owned()))?;
    let filter: FilterConfig = serde_yaml_ng::from_str(text).map_err(|e| {
        problem(
            "filter_config",
            format!("expected YAML or JSON `{{config_file: PATH}}` or `{{config: {{...}}}}`: {e}"),
        )
    })?;
    let config = match (filter.config_file, filter.config) {
        (Some(path), None) => {
            let bytes = files.read(&path).map_err(|e| {
                problem(
                    "filter_config.config_file",
                    format!("cannot read `{}`: {e}", path.display()),
                )
            })?;
            return load_file(&path, bytes);
        }
        (None, Some(inline)) => {
            let text = serde_yaml_ng::to_string(&inline)
                .map_err(|e| problem("filter_config.config", e.to_string()))?;
            Config::from_yaml_str(&text)?
        }
        (Some(_), Some(_)) => {
            return Err(problem(
                "filter_config",
                "give either `config_file` or `config`, not both".to_owned(),
            ))
        }
        (None, None) => {
            return Err(problem(
                "filter_config",
                "needs `config_file: PATH` or `config: {...}`".to_owned(),
            ))
        }
    };
    servable(config)
}

/// The configuration, unless it names a section the module cannot serve; with notes on what it
/// ignores.
fn servable(config: Config) -> Result<Loaded, ConfigErrors> {
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    if config.state != StateConfig::default() {
        problems.push(Problem {
            path: "state".to_owned(),
            message: "the Envoy module keeps no shared state yet; remove this section".to_owned(),
        });
    }
    if config.revocation != RevocationConfig::default() {
        problems.push(Problem {
            path: "revocation".to_owned(),
            message: "the Envoy module has no revocation feed yet (admin API, Auth0 stream); remove this section"
                .to_owned(),
        });
    }
    if !problems.is_empty() {
        return Err(ConfigErrors(problems));
    }
    if config.server != ServerConfig::default() {
        notes.push((
            Level::Warn,
            "server: ignored by the Envoy module (Envoy is the listener)".to_owned(),
        ));
    }
    for warning in config.warnings() {
        notes.push((Level::Warn, warning.to_string()));
    }
    Ok(Loaded {
        config,
        notes,
        file: None,
    })
}

/// A route's `DynamicModuleFilterPerRoute` config (a `StringValue`, YAML or JSON): exactly one of
/// `{route: NAME}` (the request is decided on the portcullis route NAME, whatever its `match` says)
/// and `{disabled: true}` (the filter does nothing on this route).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PerRoute {
    Route(std::sync::Arc<str>),
    Disabled,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PerRouteConfig {
    route: Option<String>,
    disabled: Option<bool>,
}

/// Parses a per-route config; a problem names `per_route_config` or its field.
pub fn per_route(config: &[u8]) -> Result<PerRoute, ConfigErrors> {
    let problem = |path: &str, message: String| {
        ConfigErrors(vec![Problem {
            path: path.to_owned(),
            message,
        }])
    };
    const EXPECTED: &str = "expected YAML or JSON `{route: NAME}` or `{disabled: true}`";
    let text = std::str::from_utf8(config)
        .map_err(|_| problem("per_route_config", "is not UTF-8 text".to_owned()))?;
    let parsed: PerRouteConfig = serde_yaml_ng::from_str(text)
        .map_err(|e| problem("per_route_config", format!("{EXPECTED}: {e}")))?;
    match (parsed.route, parsed.disabled) {
        (Some(route), None) if !route.trim().is_empty() && route.trim() == route => {
            Ok(PerRoute::Route(route.into()))
        }
        (Some(route), None) => Err(problem(
            "per_route_config.route",
            format!("`{route}` is not a route name (empty, or with surrounding spaces)"),
        )),
        (None, Some(true)) => Ok(PerRoute::Disabled),
        (None, Some(false)) => Err(problem(
            "per_route_config.disabled",
            "`disabled: false` changes nothing: remove the per-route config, or name a `route`"
                .to_owned(),
        )),
        (Some(_), Some(_)) => Err(problem(
            "per_route_config",
            "give either `route` or `disabled`, not both".to_owned(),
        )),
        (None, None) => Err(problem("per_route_config", EXPECTED.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_core::config::MemoryFiles;

    const INLINE: &str = r#"{"config": {"providers": [{"name": "keys", "type": "api_key", "keys": [{"sha256": "abababababababababababababababababababababababababababababababab", "principal": "ci"}]}]}}"#;

    fn paths(err: ConfigErrors) -> Vec<String> {
        err.0.into_iter().map(|p| p.path).collect()
    }

    #[test]
    fn a_per_route_config_names_a_route_or_disables_the_filter() {
        assert_eq!(
            per_route(b"{route: admin}").unwrap(),
            PerRoute::Route("admin".into())
        );
        assert_eq!(
            per_route(br#"{"route": "admin"}"#).unwrap(),
            PerRoute::Route("admin".into())
        );
        assert_eq!(per_route(b"disabled: true").unwrap(), PerRoute::Disabled);
        for (bad, path) in [
            (&b"{}"[..], "per_route_config"),
            (b"{route: admin, disabled: true}", "per_route_config"),
            (b"{rout: admin}", "per_route_config"),
            (b"{route: ''}", "per_route_config.route"),
            (b"{disabled: false}", "per_route_config.disabled"),
            (b"\xff", "per_route_config"),
        ] {
            assert_eq!(paths(per_route(bad).unwrap_err()), [path], "{bad:?}");
        }
    }

    #[test]
    fn inline_json_and_yaml_both_load() {
        let files = MemoryFiles::default();
        let loaded = load(INLINE.as_bytes(), &files).unwrap();
        assert_eq!(loaded.config.providers.len(), 1);
        let yaml = "config:\n  providers:\n    - {name: keys, type: api_key, keys: [{sha256: abababababababababababababababababababababababababababababababab, principal: ci}]}\n";
        assert_eq!(load(yaml.as_bytes(), &files).unwrap().config, loaded.config);
    }

    #[test]
    fn a_config_file_is_read_through_the_host() {
        let mut files = MemoryFiles::default();
        files.files.insert(
            PathBuf::from("/etc/portcullis.yaml"),
            b"providers: [{name: keys, type: api_key, keys: [{sha256: abababababababababababababababababababababababababababababababab, principal: ci}]}]\n".to_vec(),
        );
        let loaded = load(b"config_file: /etc/portcullis.yaml", &files).unwrap();
        assert_eq!(loaded.config.providers.len(), 1);
        let err = load(b"config_file: /nowhere.yaml", &files).unwrap_err();
        assert_eq!(paths(err), ["filter_config.config_file"]);
    }

    #[test]
    fn the_filter_config_itself_is_checked() {
        let files = MemoryFiles::default();
        for bad in [&b"{}"[..], b"[1]", b"config_fil: x", b"\xff"] {
            assert_eq!(
                paths(load(bad, &files).unwrap_err()),
                ["filter_config"],
                "{bad:?}"
            );
        }
        let both = br#"{"config_file": "/x", "config": {}}"#;
        assert_eq!(paths(load(both, &files).unwrap_err()), ["filter_config"]);
    }

    #[test]
    fn portcullis_problems_keep_their_field_paths() {
        let files = MemoryFiles::default();
        let bad = r#"{"config": {"providers": [{"name": "a", "type": "jwt", "issuer": "https://i", "audiences": ["x"], "jwks_file": "/k.json", "algorithm": ["RS256"]}]}}"#;
        let err = load(bad.as_bytes(), &files).unwrap_err();
        assert!(
            paths(err.clone())
                .iter()
                .any(|p| p.starts_with("providers[0]")),
            "{err:?}"
        );
    }

    #[test]
    fn server_is_ignored_and_shared_state_refused() {
        let files = MemoryFiles::default();
        let with_server = r#"{"config": {"server": {"listen": "127.0.0.1:1"}, "providers": [{"name": "keys", "type": "api_key", "keys": [{"sha256": "abababababababababababababababababababababababababababababababab", "principal": "ci"}]}]}}"#;
        let loaded = load(with_server.as_bytes(), &files).unwrap();
        assert!(loaded.notes.iter().any(|(_, n)| n.starts_with("server:")));
        let with_state = r#"{"config": {"state": {"backend": "redis", "url": "redis://127.0.0.1:1"}, "providers": [{"name": "keys", "type": "api_key", "keys": [{"sha256": "abababababababababababababababababababababababababababababababab", "principal": "ci"}]}]}}"#;
        let err = load(with_state.as_bytes(), &files).unwrap_err();
        assert!(paths(err).contains(&"state".to_owned()));
    }
}
