"""Puts the configuration's JSON Schema (`portcullis config schema`, draft 2020-12) under `config` in the
Helm chart's values.schema.json, which stays draft-07 (what Helm validates values with): the definitions
move from `$defs` to the chart schema's `definitions`, and every `$ref` follows. The chart's other values
keep their hand-written schema from the current file. A keyword draft-07 does not know fails the run
rather than being silently ignored by Helm.

Usage: python3 scripts/chart_schema.py CHART_VALUES_SCHEMA CONFIG_SCHEMA > values.schema.json
"""

import json
import sys

# Draft 2019-09/2020-12 keywords a draft-07 validator would ignore (accepting what the config refuses).
NOT_IN_DRAFT_07 = {
    "prefixItems", "unevaluatedProperties", "unevaluatedItems", "dependentRequired", "dependentSchemas",
    "$dynamicRef", "$dynamicAnchor", "$anchor", "$recursiveRef", "$recursiveAnchor", "minContains",
    "maxContains",
}
DEFS = "#/$defs/"
DEFINITIONS = "#/definitions/"


def to_draft_07(node, at="#"):
    if isinstance(node, list):
        return [to_draft_07(item, f"{at}/{i}") for i, item in enumerate(node)]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key in NOT_IN_DRAFT_07:
            raise SystemExit(f"chart_schema.py: {at}/{key}: a draft 2020-12 keyword Helm would ignore")
        if key == "$ref":
            if not value.startswith(DEFS):
                raise SystemExit(f"chart_schema.py: {at}: unsupported $ref {value!r}")
            value = DEFINITIONS + value[len(DEFS):]
        elif key in ("properties", "$defs"):
            value = {name: to_draft_07(sub, f"{at}/{key}/{name}") for name, sub in value.items()}
            out[key] = value
            continue
        out[key] = to_draft_07(value, f"{at}/{key}")
    return out


def main(chart_path, config_path):
    chart = json.load(open(chart_path))
    config = to_draft_07(json.load(open(config_path)))
    definitions = config.pop("$defs", {})
    config.pop("$schema", None)
    config["description"] = (
        "The portcullis configuration (config.yaml), generated from `portcullis config schema` by "
        "scripts/gen-schema; `portcullis validate-config` checks what a schema cannot."
    )
    chart["properties"]["config"] = config
    chart["definitions"] = definitions
    json.dump(chart, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
