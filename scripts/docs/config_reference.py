"""Renders the configuration's JSON Schema (draft 2020-12, as `portcullis config schema` prints it) as the
book's configuration reference, so the page is generated from the config types, never copied by hand.

Usage: python3 scripts/docs/config_reference.py SCHEMA.json > docs/src/reference/configuration.md

One section for the top level and one per definition (`$defs`), each a table of its fields: name, type,
default, description (the doc comment). A field whose type is a definition links to that definition's
section, so recursive types (a requirement block inside `any_of`) are rendered once. A section says at
which configuration paths it is used. Variants of a tagged union (`oneOf` whose members fix a property
with `const`, e.g. a provider's `type`) are listed under their tag.
"""

import json
import re
import sys
from collections import deque


def anchor(name):
    return "def-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def ref_name(ref):
    prefix = "#/$defs/"
    if not ref.startswith(prefix):
        raise SystemExit(f"config_reference.py: unsupported $ref {ref!r} (only {prefix}…)")
    return ref[len(prefix):]


def cell(text):
    """Text safe for one Markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|")


def literal(value):
    return "`" + json.dumps(value, ensure_ascii=False) + "`"


def type_of(schema):
    """A short description of a schema's type, with links to definitions."""
    if schema is True or schema == {}:
        return "any"
    if "$ref" in schema:
        name = ref_name(schema["$ref"])
        return f"[{name}](#{anchor(name)})"
    if "const" in schema:
        return literal(schema["const"])
    if "enum" in schema:
        values = [v for v in schema["enum"] if v is not None]
        text = "one of " + ", ".join(literal(v) for v in values)
        return text + (" or null" if None in schema["enum"] else "")
    for key in ("anyOf", "oneOf"):
        if key in schema:
            members = schema[key]
            non_null = [m for m in members if m.get("type") != "null"]
            text = " or ".join(type_of(m) for m in non_null)
            return text + (" (or null)" if len(non_null) < len(members) else "")
    if "allOf" in schema and len(schema["allOf"]) == 1:
        return type_of(schema["allOf"][0])
    kind = schema.get("type")
    if isinstance(kind, list):
        nullable = "null" in kind
        names = [type_of({**schema, "type": k}) for k in kind if k != "null"]
        return " or ".join(names) + (" (or null)" if nullable else "")
    if kind == "array":
        return "list of " + type_of(schema.get("items", {}))
    if kind == "object":
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict) and "properties" not in schema:
            return "map of string to " + type_of(extra)
        return "object"
    if kind in ("integer", "number") and ("minimum" in schema or "maximum" in schema):
        lo, hi = schema.get("minimum"), schema.get("maximum")
        bounds = f"{lo if lo is not None else ''}..{hi if hi is not None else ''}"
        return f"{kind} ({bounds})"
    if kind == "string" and "format" in schema:
        return f"string ({schema['format']})"
    return kind or "any"


def tag_of(variant):
    """(property, value) when a union member fixes a property with `const`, else None."""
    for name, prop in variant.get("properties", {}).items():
        if isinstance(prop, dict) and "const" in prop:
            return name, prop["const"]
        if isinstance(prop, dict) and len(prop.get("enum", [])) == 1:
            return name, prop["enum"][0]
    return None


def field_rows(schema):
    required = set(schema.get("required", []))
    rows = []
    for name, prop in schema.get("properties", {}).items():
        prop = prop if isinstance(prop, dict) else {}
        default = literal(prop["default"]) if "default" in prop else ("required" if name in required else "")
        description = prop.get("description", "")
        if "$ref" in prop and not description:
            description = ""
        rows.append(f"| `{name}` | {cell(type_of(prop))} | {cell(default)} | {cell(description)} |")
    return rows


def table(schema):
    rows = field_rows(schema)
    if not rows:
        return []
    return ["| field | type | default | description |", "| --- | --- | --- | --- |", *rows]


def children(schema, path):
    """(path, definition name) for every definition a schema refers to, with the path it sits at."""
    out = []

    def walk(node, at):
        if isinstance(node, list):
            for item in node:
                walk(item, at)
            return
        if not isinstance(node, dict):
            return
        if "$ref" in node:
            out.append((at, ref_name(node["$ref"])))
        for name, prop in node.get("properties", {}).items():
            walk(prop, f"{at}.{name}" if at else name)
        if "items" in node:
            walk(node["items"], f"{at}[]")
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], f"{at}.<name>")
        for key in ("anyOf", "oneOf", "allOf"):
            walk(node.get(key, []), at)

    walk(schema, path)
    return out


def constants(schema):
    """An enum written as `oneOf` constants (what schemars emits when the variants have doc comments):
    each value with its description."""
    members = schema.get("oneOf", [])
    if not members or not all("const" in m for m in members):
        return []
    lines = ["One of:", ""]
    for member in members:
        description = member.get("description", "")
        lines.append(f"- {literal(member['const'])}" + (f": {cell(description)}" if description else ""))
    return lines + [""]


def union(schema):
    """Sections for a tagged union's members, or plain alternatives."""
    lines = constants(schema)
    if lines:
        return lines
    for key in ("oneOf", "anyOf"):
        members = [m for m in schema.get(key, []) if m.get("type") != "null"]
        if not members or not any("properties" in m or "$ref" in m for m in members):
            continue
        lines.append("One of:")
        lines.append("")
        for member in members:
            tag = tag_of(member)
            title = f"`{tag[0]}: {json.dumps(tag[1])}`" if tag else type_of(member)
            description = member.get("description", "")
            lines.append(f"- {title}" + (f": {cell(description)}" if description else ""))
            member_table = table(member)
            if member_table:
                lines.append("")
                lines.extend("  " + row for row in member_table)
                lines.append("")
        lines.append("")
    return lines


def render(schema):
    defs = schema.get("$defs", {})
    # Where each definition is used, breadth first from the top level (shortest path first).
    used_at = {}
    queue = deque(children(schema, ""))
    while queue:
        at, name = queue.popleft()
        if name not in defs:
            raise SystemExit(f"config_reference.py: $ref to unknown definition {name!r}")
        first = name not in used_at
        paths = used_at.setdefault(name, [])
        if at and at not in paths and len(paths) < 6:
            paths.append(at)
        if first:
            queue.extend(children(defs[name], at))

    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated by scripts/docs-reference from `portcullis config schema`; do not edit. -->",
        "",
        "Every key of the configuration file, generated from the configuration types (the JSON Schema that",
        "`portcullis config schema` prints). Unknown keys are errors. A type that links is described in its",
        "own section below. [Configuration](../concepts/configuration.md) explains how the file is read and",
        "checked.",
        "",
        "## Top level",
        "",
    ]
    if schema.get("description"):
        lines += [cell(schema["description"]), ""]
    lines += table(schema) + [""] + union(schema)
    for name in sorted(defs, key=lambda n: (n not in used_at, n.lower())):
        definition = defs[name]
        lines += [f'<a id="{anchor(name)}"></a>', "", f"## {name}", ""]
        if definition.get("description"):
            lines += [cell(definition["description"]), ""]
        paths = used_at.get(name)
        lines += [("Used at " + ", ".join(f"`{p}`" for p in paths) + ".") if paths else "Not used by the top level.", ""]
        body = table(definition)
        if body:
            lines += body + [""]
        lines += union(definition)
        if not body and not definition.get("oneOf") and not definition.get("anyOf"):
            lines += [f"Type: {type_of(definition)}.", ""]
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        sys.stdout.write(render(json.load(f)))
