"""JSON Schemas of the definition kinds: loading, registry-driven enums, and located errors.

A kind's schema file holds only what is particular to the kind; :func:`kind_schema` merges in the
envelope every definition shares (``kind``, ``key``, ``title``, ``description``) and the common
``$defs``, so each exported schema is self-contained (editors need no network).

Two annotations connect schemas to the registry and to error codes:

* ``"x-registry": "field_type"`` — the value must be a name in that catalogue; the ``enum`` is
  filled in from the registry, so suggestions and the schema's enum never disagree.
* ``"x-error-code": "form.unknown-field-type"`` — the stable code an author sees when this
  sub-schema fails, instead of the generic ``schema.<keyword>``.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from careloop.engine.errors import Path, Problem, did_you_mean
from careloop.engine.registry import Registry, loaded_registry
from careloop.engine.sources import Document

DIALECT = "https://json-schema.org/draft/2020-12/schema"


def _read_json(package: str, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(resources.files(package).joinpath(name).read_text("utf-8"))
    return data


@cache
def _common() -> dict[str, Any]:
    return _read_json("careloop.engine", "schema/common.json")


def _fill_registry_enums(node: Any, registry: Registry) -> None:
    """Replace every ``x-registry`` annotation by an ``enum`` of the catalogue's names."""
    if isinstance(node, dict):
        sort = node.get("x-registry")
        if isinstance(sort, str):
            node["enum"] = sorted(registry.catalogue(sort).names())
        for value in node.values():
            _fill_registry_enums(value, registry)
    elif isinstance(node, list):
        for value in node:
            _fill_registry_enums(value, registry)


fill_registry_enums = _fill_registry_enums  # public: a type's own schema fills its enums too


def compose(package: str, schema_file: str, *, envelope: bool = True) -> dict[str, Any]:
    """Build a self-contained schema from a kind's schema file plus the common pieces.

    >>> s = compose("careloop.engine", "schema/template.json")
    >>> sorted(s["required"])[:3], s["additionalProperties"]
    (['body', 'key', 'kind'], False)
    """
    own = _read_json(package, schema_file)
    common = _common()
    schema: dict[str, Any] = {"$schema": DIALECT, "type": "object"}
    schema.update({k: v for k, v in own.items() if k not in ("properties", "$defs")})
    props = dict(common["envelope"]) if envelope else {}
    props.update(own.get("properties", {}))
    schema["properties"] = props
    schema.setdefault("additionalProperties", False)
    schema["$defs"] = {**common["$defs"], **own.get("$defs", {})}
    schema = copy.deepcopy(schema)
    _fill_registry_enums(schema, loaded_registry())
    return schema


@cache
def kind_schema(kind: str) -> dict[str, Any]:
    """The full schema of a registered kind (cached; the registry is fixed once loaded)."""
    spec = loaded_registry().catalogue("kind")[kind]
    return compose(spec.package, spec.schema_file)


@cache
def manifest_schema() -> dict[str, Any]:
    return compose("careloop.engine", "schema/app.json", envelope=False)


@cache
def _validator(kind: str) -> Draft202012Validator:
    schema = manifest_schema() if kind == "__app__" else kind_schema(kind)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def all_schemas() -> dict[str, dict[str, Any]]:
    """``{file name: schema}`` for every kind plus the bundle manifest (for ``schema export``)."""
    out = {f"{name}.schema.json": kind_schema(name)
           for name in loaded_registry().catalogue("kind").names()}
    out["app.schema.json"] = manifest_schema()
    return out


_KEBAB = re.compile(r"(?<!^)(?=[A-Z])")


def _generic_code(validator: str) -> str:
    return "schema." + _KEBAB.sub("-", validator).lower()


def _leaf_errors(error: ValidationError) -> Iterator[ValidationError]:
    """For oneOf/anyOf failures, descend into the branch that fits best."""
    if error.validator in ("oneOf", "anyOf") and error.context:
        best = best_match(error.context)
        yield from _leaf_errors(best)
    else:
        yield error


def _schema_of(error: ValidationError) -> dict[str, Any]:
    return dict(error.schema) if isinstance(error.schema, dict) else {}


def _describe(error: ValidationError) -> tuple[str, str | None]:
    """Message and hint for one jsonschema error, naming the key, the value and the expectation."""
    v, value, schema = error.validator, error.instance, _schema_of(error)
    if v == "enum":
        choices = schema.get("enum", [])
        shown = ", ".join(repr(c) for c in choices[:12]) + (" …" if len(choices) > 12 else "")
        return (f"value {value!r} is not allowed; expected one of {shown}",
                did_you_mean(value, [str(c) for c in choices]))
    if v == "const":
        return f"value {value!r} is not allowed here; expected {schema['const']!r}", None
    if v == "type":
        return f"value {value!r} has the wrong type; expected {error.validator_value}", None
    if v == "pattern":
        desc = schema.get("description")
        return (f"value {value!r} does not match the pattern {error.validator_value}"
                + (f" ({desc})" if desc else ""), None)
    return error.message, None


def schema_problems(doc: Document, kind: str, root: Path = ()) -> list[Problem]:
    """Validate ``doc.data`` (or the part at ``root``) against a kind's schema, located."""
    return validator_problems(doc, _validator(kind), root)


def validator_problems(doc: Document, validator: Draft202012Validator,
                       root: Path = ()) -> list[Problem]:
    """Validate the part of ``doc.data`` at ``root`` with ``validator`` (e.g. one step type's
    options schema), each error located and worded as :func:`schema_problems` words it."""
    instance = doc.data
    for part in root:
        instance = instance[part]
    problems: list[Problem] = []
    seen: set[tuple[str, Path, str]] = set()
    for top in validator.iter_errors(instance):
        for error in _leaf_errors(top):
            for problem in _to_problems(doc, error, root):
                marker = (problem.code, problem.path, problem.message)
                if marker not in seen:
                    seen.add(marker)
                    problems.append(problem)
    return problems


def _to_problems(doc: Document, error: ValidationError, root: Path) -> Iterator[Problem]:
    path: Path = (*root, *error.absolute_path)
    schema = _schema_of(error)
    code = schema.get("x-error-code")
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = list(schema.get("properties", {}))
        for extra in sorted(set(error.instance) - set(allowed)):
            yield doc.problem(code or "schema.unknown-key", f"unknown key '{extra}'",
                              (*path, extra), at_key=True, hint=did_you_mean(extra, allowed))
        return
    if error.validator == "required":
        required = error.validator_value if isinstance(error.validator_value, list) else []
        present = error.instance if isinstance(error.instance, dict) else {}
        missing = [k for k in required if k not in present]
        for key in missing:
            yield doc.problem(code or "schema.missing-key", f"missing required key '{key}'", path)
        return
    message, hint = _describe(error)
    yield doc.problem(code or _generic_code(str(error.validator)), message, path, hint=hint)


def check_manifest(doc: Document) -> list[Problem]:
    """Problems of a bundle's ``app.yaml``."""
    return schema_problems(doc, "__app__")
