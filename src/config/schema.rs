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
