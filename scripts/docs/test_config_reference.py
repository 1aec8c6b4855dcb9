"""Checks scripts/docs/config_reference.py on a schema shaped like schemars' output (draft 2020-12):
definitions linked, a recursive definition rendered once, a tagged union listed by its tag, defaults and
optional values shown, a dangling $ref refused. Run by scripts/test-docs; exits 1 on a failed check."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import config_reference  # noqa: E402

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Config",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "server": {"$ref": "#/$defs/ServerConfig", "description": "Listeners."},
        "mode": {"$ref": "#/$defs/Mode", "default": "enforce"},
        "providers": {"type": "array", "items": {"$ref": "#/$defs/ProviderConfig"}},
        "routes": {"type": "array", "items": {"$ref": "#/$defs/RouteConfig"}},
        "realm": {"type": ["string", "null"], "description": "WWW-Authenticate realm."},
    },
    "$defs": {
        "ServerConfig": {
            "type": "object",
            "properties": {
                "listen": {"type": "string", "default": "0.0.0.0:9001", "description": "gRPC | Check."},
                "max_headers": {"type": "integer", "format": "uint", "minimum": 0, "default": 256},
            },
        },
        "Mode": {"type": "string", "enum": ["enforce", "permissive"]},
        "Principal": {"oneOf": [{"type": "string", "const": "any", "description": "Humans and machines."},
                                {"type": "string", "const": "human"}]},
        "ProviderConfig": {
            "oneOf": [
                {"type": "object", "description": "JWTs.", "required": ["type", "issuer"],
                 "properties": {"type": {"type": "string", "const": "jwt"}, "issuer": {"type": "string"}}},
                {"type": "object", "required": ["type"],
                 "properties": {"type": {"type": "string", "const": "api_key"},
                                "keys": {"type": "array", "items": {"type": "string"}}}},
            ]
        },
        "RouteConfig": {
            "type": "object",
            "properties": {"require": {"anyOf": [{"$ref": "#/$defs/Require"}, {"type": "null"}]}},
        },
        "Require": {
            "type": "object",
            "properties": {
                "any_of": {"type": "array", "items": {"$ref": "#/$defs/Require"}},
                "claims": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "Unused": {"type": "string"},
    },
}

failures = 0
checks = 0


def check(condition, what):
    global failures, checks
    checks += 1
    if condition:
        print(f"ok   {what}")
    else:
        failures += 1
        print(f"FAIL {what}")


page = config_reference.render(SCHEMA)
check("| `server` | [ServerConfig](#def-serverconfig) |  | Listeners. |" in page, "a field of a definition's type links to it")
check('<a id="def-serverconfig"></a>' in page and "## ServerConfig" in page, "each definition has a section and an anchor")
check('`"0.0.0.0:9001"`' in page, "defaults are shown as JSON literals")
check("gRPC \\| Check." in page, "a | in a description does not break the table")
check('one of `"enforce"`, `"permissive"`' in page, "enums list their values")
check("string (or null)" in page, "an optional value says so")
check("[Require](#def-require) (or null)" in page, "an Option of a definition links and says so")
check(page.count("## Require") == 1, "a recursive definition is rendered once")
check("list of [Require](#def-require)" in page, "the recursion is a link")
check('`type: "jwt"`: JWTs.' in page and '`type: "api_key"`' in page, "a tagged union lists each member by its tag")
check("| `issuer` | string | required |" in page, "required fields say so")
check("Used at `providers[]`." in page, "a section says where it is used")
check("Used at `routes[].require`, `routes[].require.any_of[]`." in page, "nested paths are found")
check("map of string to string" in page, "maps are named")
check("Not used by the top level." in page, "an unreferenced definition is still listed")
check('- `"any"`: Humans and machines.' in page and '- `"human"`' in page,
      "an enum of documented constants lists each value with its description")
try:
    config_reference.render({"properties": {"x": {"$ref": "#/$defs/Missing"}}, "$defs": {}})
    check(False, "a $ref to a missing definition is refused")
except SystemExit:
    check(True, "a $ref to a missing definition is refused")

print(f"{checks - failures} passed, {failures} failed")
sys.exit(1 if failures else 0)
