"""Each step's JSON schema, a data file with its defaults: ``<step>.schema.json``.

Fragments shared by several steps live in ``common.schema.json`` (``$defs``), referenced as
``common.schema.json#/$defs/<name>``.  :func:`validate` checks a step config against its
schema and returns a copy with every missing key that has a ``default`` filled in.  Keys whose
default depends on other keys (say ``checkpoint-dir``) have none here: their ``description``
says how the step derives it.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path

from bpflow.utils import BpflowError

SCHEMA_DIR = Path(__file__).resolve().parent


@functools.cache
def _document(name: str) -> dict:
    path = SCHEMA_DIR / name
    if not path.is_file():
        raise ValueError(f"no schema file {name}")
    return json.loads(path.read_text())


def _pointer(doc: dict, pointer: str):
    node = doc
    for part in [p for p in pointer.split("/") if p]:
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _inline(node, doc_name: str):
    """``node`` with every ``$ref`` replaced by what it points to (sibling keys win)."""
    if isinstance(node, list):
        return [_inline(x, doc_name) for x in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target_doc, _, pointer = node["$ref"].partition("#")
        target_doc = target_doc or doc_name
        resolved = _inline(_pointer(_document(target_doc), pointer), target_doc)
        siblings = {k: _inline(v, doc_name) for k, v in node.items() if k != "$ref"}
        return {**resolved, **siblings}
    return {k: _inline(v, doc_name) for k, v in node.items() if k not in ("$defs", "$id")}


@functools.cache
def _schema(step: str) -> str:
    return json.dumps(_inline(_document(f"{step}.schema.json"), f"{step}.schema.json"))


def load_schema(step: str) -> dict:
    """The schema of ``step`` (e.g. "prepare-data") with every reference inlined."""
    return json.loads(_schema(step))


def steps() -> list[str]:
    """The steps that have a schema."""
    return sorted(
        p.name[: -len(".schema.json")] for p in SCHEMA_DIR.glob("*.schema.json") if p.name != "common.schema.json"
    )


def fill_defaults(instance, schema: dict):
    """Set every missing property that has a ``default``: in objects (recursively), array
    items, and the ``oneOf`` branch that a ``const`` property selects (report-figures'
    ``figure``).  Changes ``instance`` and returns it."""
    if isinstance(instance, dict):
        props = schema.get("properties", {})
        for key, sub in props.items():
            if key not in instance and "default" in sub:
                instance[key] = copy.deepcopy(sub["default"])
        for key, value in instance.items():
            if key in props:
                fill_defaults(value, props[key])
            elif isinstance(schema.get("additionalProperties"), dict):
                fill_defaults(value, schema["additionalProperties"])
        for branch in _matching_branches(instance, schema):
            fill_defaults(instance, branch)
    elif isinstance(instance, list) and isinstance(schema.get("items"), dict):
        for item in instance:
            fill_defaults(item, schema["items"])
    return instance


def _matching_branches(instance: dict, schema: dict) -> list[dict]:
    """The object branch of a ``oneOf`` that this (valid) instance matches, told apart by a
    property with a ``const`` (e.g. report-figures' ``figure``)."""
    out = []
    for branch in schema.get("oneOf", []):
        consts = {
            k: v["const"] for k, v in branch.get("properties", {}).items() if isinstance(v, dict) and "const" in v
        }
        if consts and all(instance.get(k) == v for k, v in consts.items()):
            out.append(branch)
    return out


def check(config: dict, schema: dict, source: str) -> None:
    """Raise a one-line BpflowError (``source: key a/b: message``) unless ``config`` is valid."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        raise BpflowError(f"{source}: key {where}: {err.message}")


def validate(config: dict, step: str, source: str | None = None) -> dict:
    """Check ``config`` against the schema of ``step``; return a copy with defaults filled in."""
    if not isinstance(config, dict):
        raise BpflowError(f"{source or step}: the config must be a JSON object")
    schema = load_schema(step)
    check(config, schema, source or f"{step} config")
    return fill_defaults(copy.deepcopy(config), schema)
