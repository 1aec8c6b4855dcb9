//! The JSON Schema (draft 2020-12) of the configuration file, generated from the config types by
//! `schemars`: each field's description is its doc comment, its default the serde default.
//! `portcullis config schema` prints it; editors complete and check YAML with it
//! (`# yaml-language-server: $schema=…`), the Helm chart's `values.schema.json` carries it under `config`,
//! and the book's configuration reference is rendered from it. Types that are read by hand (a provider,
//! a secret reference, the document itself) implement `JsonSchema` by hand beside their parser.

use schemars::generate::SchemaSettings;
use schemars::Schema;

use super::Config;

/// The schema of a whole configuration file.
pub fn schema() -> serde_json::Value {
    let generator = SchemaSettings::draft2020_12()
        .for_deserialize()
        .into_generator();
    let mut root = generator.into_root_schema_for::<Config>();
    root.insert("title".to_owned(), "portcullis configuration".into());
    root.insert(
        "description".to_owned(),
        "The configuration file of portcullis, an Envoy ext_authz service (`portcullis serve --config FILE`; \
         `portcullis validate-config FILE` checks what a schema cannot: URLs, cross-references, files and secrets)."
            .into(),
    );
    root.to_value()
}

/// Drops a field's `default` where the serde default depends on the machine (a per-CPU limit): the schema
/// must be the same everywhere, and the field's description says what the default is.
pub(crate) fn without_default(schema: &mut Schema) {
    schema.remove("default");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schema's top level is what the parser reads, and a provider's `type`s are the parser's kinds.
    #[test]
    fn the_schema_has_the_parsers_sections_and_provider_types() {
        let schema = schema();
        let mut sections: Vec<&str> = schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut known = super::super::TOP_LEVEL_KEYS.to_vec();
        sections.sort_unstable();
        known.sort_unstable();
        assert_eq!(sections, known);
        assert_eq!(schema["additionalProperties"], false);
        assert_eq!(schema["required"], serde_json::json!(["providers"]));

        let types: Vec<&str> = schema["$defs"]["ProviderConfig"]["oneOf"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["properties"]["type"]["const"].as_str().unwrap())
            .collect();
        assert_eq!(types.join(", "), super::super::providers::KINDS);
    }

    /// A default that depends on the machine would make the committed schema drift between machines.
    #[test]
    fn machine_dependent_defaults_are_left_out() {
        let server = &schema()["$defs"]["ServerConfig"]["properties"];
        assert_eq!(server["max_headers"]["default"], 256);
        for field in ["max_concurrent_checks", "max_concurrent_verifications"] {
            assert!(server[field].get("default").is_none(), "{field}");
            assert!(server[field]["description"]
                .as_str()
                .unwrap()
                .contains("Defaults to"));
        }
    }
}
