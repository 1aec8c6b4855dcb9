//! A route's own answer to a policy denial: a replacement status, extra headers, and a body template with
//! `{{error}}`, `{{error_description}}`, `{{decision_id}}` and `{{route}}` placeholders, parsed once.

use crate::config::policy::DenyConfig;
use crate::config::Problems;
use crate::request::is_header_name;

/// How a policy denial on a route is answered, beyond the standard status and challenge.
#[derive(Debug, Default)]
pub struct DenySettings {
    status: Option<u16>,
    headers: Box<[(Box<str>, Box<str>)]>,
    body: Option<BodyTemplate>,
}

// === impl DenySettings ===

impl DenySettings {
    pub(super) fn compile(
        problems: &mut Problems,
        path: &str,
        config: &DenyConfig,
    ) -> DenySettings {
        if let Some(status) = config.status {
            if !(400..=499).contains(&status) {
                problems.add(format!("{path}.status"), "must be a 4xx status");
            }
        }
        for (name, value) in &config.headers {
            if !is_header_name(name) {
                problems.add(
                    format!("{path}.headers.{name}"),
                    "must be a lower-case header name",
                );
            }
            if !value
                .bytes()
                .all(|b| b == b'\t' || (0x20..0x7F).contains(&b))
            {
                problems.add(
                    format!("{path}.headers.{name}"),
                    "the value must be printable ASCII (no line breaks)",
                );
            }
        }
        let body = config.body.as_deref().and_then(|text| {
            BodyTemplate::parse(text)
                .map_err(|message| problems.add(format!("{path}.body"), message))
                .ok()
        });
        DenySettings {
            status: config.status,
            headers: config
                .headers
                .iter()
                .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
                .collect(),
            body,
        }
    }

    /// The status replacing the requirement's own 401/403, when configured.
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// Extra response headers, lower-case names.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers.iter().map(|(k, v)| (&**k, &**v))
    }

    /// The body template, when configured.
    pub fn body(&self) -> Option<&BodyTemplate> {
        self.body.as_ref()
    }
}

/// The values a deny body template can use.
#[derive(Debug, Clone, Copy)]
pub struct DenyVars<'a> {
    /// The RFC 6750 error code, e.g. `insufficient_scope`.
    pub error: &'a str,
    /// The fixed, client-safe description.
    pub error_description: &'a str,
    pub decision_id: &'a str,
    /// The route's name.
    pub route: &'a str,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Var {
    Error,
    ErrorDescription,
    DecisionId,
    Route,
}

#[derive(Debug, PartialEq)]
enum Part {
    Text(Box<str>),
    Var(Var),
}

/// A body template parsed at load time: text and `{{name}}` placeholders (spaces inside the braces
/// allowed). An unknown name or an unclosed `{{` is a configuration error.
#[derive(Debug, PartialEq)]
pub struct BodyTemplate(Box<[Part]>);

// === impl BodyTemplate ===

impl BodyTemplate {
    pub fn parse(text: &str) -> Result<BodyTemplate, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].into()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| "has a `{{` without its `}}`".to_owned())?;
            let var = match after[..end].trim() {
                "error" => Var::Error,
                "error_description" => Var::ErrorDescription,
                "decision_id" => Var::DecisionId,
                "route" => Var::Route,
                other => {
                    return Err(format!(
                        "unknown placeholder `{{{{{other}}}}}`: use error, error_description, decision_id, route"
                    ))
                }
            };
            parts.push(Part::Var(var));
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.into()));
        }
        Ok(BodyTemplate(parts.into()))
    }

    /// The body with each placeholder replaced. Values are escaped as inside a JSON string (`"`, `\` and
    /// control characters), so a JSON template stays valid; the values portcullis supplies (error codes,
    /// fixed sentences, decision ids, route names) contain none of these, so text templates read the same.
    pub fn render(&self, vars: &DenyVars<'_>) -> String {
        let mut out = String::new();
        for part in &*self.0 {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Var(var) => escape_into(
                    &mut out,
                    match var {
                        Var::Error => vars.error,
                        Var::ErrorDescription => vars.error_description,
                        Var::DecisionId => vars.decision_id,
                        Var::Route => vars.route,
                    },
                ),
            }
        }
        out
    }
}

fn escape_into(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VARS: DenyVars<'static> = DenyVars {
        error: "insufficient_scope",
        error_description: "the token lacks a required permission",
        decision_id: "d-123",
        route: "kill-switch",
    };

    #[test]
    fn placeholders_are_replaced() {
        let t = BodyTemplate::parse(
            r#"{"error":"{{error}}","message":"{{ error_description }}","id":"{{decision_id}}","route":"{{route}}"}"#,
        )
        .unwrap();
        assert_eq!(
            t.render(&VARS),
            r#"{"error":"insufficient_scope","message":"the token lacks a required permission","id":"d-123","route":"kill-switch"}"#
        );
        assert_eq!(
            BodyTemplate::parse("no placeholders")
                .unwrap()
                .render(&VARS),
            "no placeholders"
        );
    }

    #[test]
    fn values_are_json_escaped() {
        let t = BodyTemplate::parse("{{route}}").unwrap();
        let vars = DenyVars {
            route: "a\"b\\c\n",
            ..VARS
        };
        assert_eq!(t.render(&vars), "a\\\"b\\\\c\\u000a");
    }

    #[test]
    fn bad_templates_are_refused() {
        assert_eq!(
            BodyTemplate::parse("x {{token}}").unwrap_err(),
            "unknown placeholder `{{token}}`: use error, error_description, decision_id, route"
        );
        assert_eq!(
            BodyTemplate::parse("{{error").unwrap_err(),
            "has a `{{` without its `}}`"
        );
    }

    #[test]
    fn settings_are_checked() {
        let config: DenyConfig = serde_yaml_ng::from_str(
            "{status: 302, headers: {X-Why: a, x-ok: \"line\\nbreak\"}, body: '{{nope}}'}",
        )
        .unwrap();
        let mut problems = Problems::default();
        DenySettings::compile(&mut problems, "routes[1].deny", &config);
        let paths: Vec<&str> = problems.0.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "routes[1].deny.status",
                "routes[1].deny.headers.X-Why",
                "routes[1].deny.headers.x-ok",
                "routes[1].deny.body"
            ]
        );

        let config: DenyConfig =
            serde_yaml_ng::from_str("{status: 404, headers: {x-why: hidden}}").unwrap();
        let mut problems = Problems::default();
        let deny = DenySettings::compile(&mut problems, "deny", &config);
        assert!(problems.0.is_empty());
        assert_eq!(deny.status(), Some(404));
        assert_eq!(deny.headers().collect::<Vec<_>>(), [("x-why", "hidden")]);
        assert!(deny.body().is_none());
    }
}
