//! `type: anonymous`: an explicit identity for requests without any credential.

use serde::Deserialize;

use super::Problems;

/// `type: anonymous`: an explicit identity for requests that carry no credential at all.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnonymousConfig {
    /// The principal (`x-auth-subject`). Defaults to `anonymous`.
    #[serde(default = "default_anonymous")]
    pub principal: String,
}

fn default_anonymous() -> String {
    "anonymous".to_owned()
}

/// Checks an `anonymous` provider's settings.
pub(super) fn validate(problems: &mut Problems, path: &str, c: &AnonymousConfig) {
    if c.principal.is_empty() || c.principal.chars().any(char::is_control) {
        problems.add(format!("{path}.principal"), "must be one non-empty line");
    }
}
