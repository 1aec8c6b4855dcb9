//! Weak but valid configurations: what `validate-config` prints as `warning:` lines (exit 0) and `serve`
//! logs at start. Each warning names the field it is about, like a problem does.

use super::{Config, Mode, Problem, ProviderKind, RequireConfig};

/// Every weakness of a valid configuration, in document order.
pub fn warnings(config: &Config) -> Vec<Problem> {
    let mut found = super::providers::warnings(&config.providers);
    let mut warn = |path: String, message: &str| {
        found.push(Problem {
            path,
            message: message.to_owned(),
        })
    };
    for (i, provider) in config.providers.iter().enumerate() {
        match &provider.kind {
            ProviderKind::Mtls(m) if m.trust_domains.is_empty() && m.san_patterns.is_empty() => warn(
                format!("providers[{i}]"),
                "an mtls provider with neither trust_domains nor san_patterns accepts any client certificate Envoy verified",
            ),
            ProviderKind::EnvoyJwt(e) if e.issuers.is_empty() => warn(
                format!("providers[{i}].issuers"),
                "an envoy_jwt provider without issuers accepts a payload from any issuer jwt_authn was configured for",
            ),
            _ => {}
        }
    }
    let authorization: Vec<usize> = config
        .providers
        .iter()
        .enumerate()
        .filter(|(_, p)| {
            p.kind.takes_credential()
                && matches!(&p.credential, super::CredentialLocation::Header { name, .. } if name == "authorization")
        })
        .map(|(i, _)| i)
        .collect();
    let all_jwt = authorization
        .iter()
        .all(|&i| matches!(config.providers[i].kind, ProviderKind::Jwt(_)));
    if authorization.len() > 1 && !all_jwt {
        let names: Vec<&str> = authorization
            .iter()
            .map(|&i| config.providers[i].name.as_str())
            .collect();
        warn(
            format!("providers[{}].credential", authorization[1]),
            &format!(
                "{} providers read the Authorization header ({}): a credential meant for one is judged by whichever owns its shape first",
                names.len(),
                names.join(", ")
            ),
        );
    }
    let policy = &config.policy;
    if policy.mode == Mode::Permissive {
        warn(
            "mode".to_owned(),
            "permissive mode is global: every route without its own `mode: enforce` lets requests that fail its requirements through",
        );
    }
    let default = &policy.default_route;
    let default_mode = default.mode.unwrap_or(policy.mode);
    for (i, route) in policy.routes.iter().enumerate() {
        let Some(path) = &route.matches.path else {
            continue;
        };
        let route_mode = route.mode.unwrap_or(policy.mode);
        let laxer = (default.allow_anonymous && !route.allow_anonymous)
            || (default.require == RequireConfig::default()
                && route.require != RequireConfig::default())
            || (default_mode == Mode::Permissive && route_mode == Mode::Enforce);
        if laxer {
            warn(
                format!("routes[{i}].match.path"),
                &format!(
                    "the default route is laxer than route `{}`: only `{path}` and its near-variants (trailing `/`, case, `;` parameters, percent-encoding) take this route; every other path under it (e.g. `{}/x`) takes the default route; use path_prefix or path_glob if they need the same requirements",
                    route.name,
                    path.trim_end_matches('/')
                ),
            );
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(yaml: &str) -> Vec<String> {
        warnings(&Config::from_yaml_str(yaml).unwrap())
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn weak_configs_are_warned_about() {
        let found = lines(
            "
providers:
  - {name: mesh, type: mtls}
  - {name: gw, type: envoy_jwt}
  - {name: corp, type: jwt, issuer: 'https://a.example/', audiences: [x]}
  - {name: gh, type: github}
mode: permissive
routes:
  - {name: admin, match: {path: /admin}, mode: enforce, require: {scopes: {all_of: [admin]}}}
",
        );
        let has = |needle: &str| found.iter().any(|w| w.starts_with(needle));
        assert!(has("providers[0]: an mtls provider"), "{found:?}");
        assert!(
            has("providers[1].issuers: an envoy_jwt provider"),
            "{found:?}"
        );
        assert!(
            has("providers[3].credential: 2 providers read the Authorization header (corp, gh)"),
            "{found:?}"
        );
        assert!(has("mode: permissive mode is global"), "{found:?}");
        assert!(
            has("routes[0].match.path: the default route is laxer than route `admin`"),
            "{found:?}"
        );
        assert_eq!(found.len(), 5, "{found:?}");
    }

    #[test]
    fn a_tight_config_has_no_warnings() {
        let found = lines(
            "
providers:
  - {name: mesh, type: mtls, trust_domains: [cluster.local]}
  - {name: gw, type: envoy_jwt, issuers: ['https://a.example/']}
  - {name: corp, type: jwt, issuer: 'https://a.example/', audiences: [x]}
  - {name: other, type: jwt, issuer: 'https://b.example/', audiences: [x]}
routes:
  - {name: admin, match: {path: /admin}, require: {scopes: {all_of: [admin]}}}
default_route: {require: {scopes: {all_of: [read]}}}
",
        );
        assert!(found.is_empty(), "{found:?}");
    }
}
