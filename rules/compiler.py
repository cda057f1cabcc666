"""Compilers of ``ruleset``, ``decision_table`` and ``dictionary``: small checkers.

    >>> from careloop.engine.sources import load_text
    >>> from careloop.engine.check import check_documents
    >>> text = ("kind: ruleset\\nkey: r\\ntitle: {zh-CN: 规则, en: Rules}\\n"
    ...         "on: [form.submitted]\\nrules:\\n  - key: a\\n    when: answers.overall < 3\\n"
    ...         "    then: [{do: tag, tag: x}]\\n")
    >>> check_documents([load_text(text, "r.yaml")]).specs[("ruleset", "r")].rules[0].key
    'a'
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from functools import cache
from types import MappingProxyType
from typing import Any

from jinja2 import TemplateSyntaxError
from jsonschema import Draft202012Validator

from careloop.engine.check import CompileContext, Definition
from careloop.engine.errors import Path, did_you_mean
from careloop.engine.registry import loaded_registry
from careloop.engine.services import FIELD_KEYS, find_service
from careloop.rules.actions import _ENV, ActionSpec
from careloop.rules.classify import CategorySpec, DictionarySpec
from careloop.rules.decisions import (
    CellError,
    DecisionTableSpec,
    InputSpec,
    RowSpec,
    overlapping_rows,
    parse_cell,
    uncovered_values,
)
from careloop.rules.flat import flat_matcher
from careloop.rules.matcher import ruleset_matcher
from careloop.rules.spec import (
    CONTEXT_NAMES,
    ActionCall,
    ClassifySpec,
    RuleSetSpec,
    RuleSpec,
    answer_fields,
    watched_paths,
)

# --- rule sets ------------------------------------------------------------------------------


def compile_ruleset(definition: Definition, ctx: CompileContext) -> RuleSetSpec | None:
    """Check a rule set (expressions, actions, roles, form fields) and build its spec."""
    body, doc = definition.body, definition.doc
    before = len(ctx.problems)
    form_fields = _form_fields(definition, ctx)
    flt = ctx.expression(doc, ("filter",), body.get("filter"), CONTEXT_NAMES)
    if flt is not None:
        _check_answer_fields(definition, ctx, ("filter",), flt, form_fields)
    classify = _classify(definition, ctx)
    rules = []
    for i, raw in enumerate(body["rules"]):
        rule = _rule(definition, ctx, ("rules", i), raw, form_fields)
        if rule is not None:
            rules.append(rule)
    _check_unique_rule_keys(definition, ctx)
    if len(ctx.problems) > before and any(p.severity == "error" for p in ctx.problems[before:]):
        return None
    ordered = [rule for _, rule in sorted(enumerate(rules),
                                          key=lambda item: (-item[1].priority, item[0]))]
    first = body.get("hit_policy", "all") == "first"
    conditions = [(r.when, r.stop) for r in ordered]
    return RuleSetSpec(key=definition.key, title=MappingProxyType(dict(definition.title)),
                       on=frozenset(body["on"]), filter=flt,
                       hit_policy=body.get("hit_policy", "all"),
                       rules=tuple(ordered), classify=classify,
                       forms=tuple(body.get("forms", ())),
                       filter_test=flt.evaluate if flt is not None else None,
                       matcher=flat_matcher(flt, conditions, first)
                       or ruleset_matcher(flt, conditions, first))


def _form_fields(definition: Definition, ctx: CompileContext) -> frozenset[str] | None:
    """Field keys of the forms the rule set names, or ``None`` when they cannot be known."""
    keys = definition.body.get("forms")
    registry = loaded_registry()
    field_keys = find_service(registry, FIELD_KEYS)
    if not keys or "form" not in registry.catalogue("kind") or field_keys is None:
        return None
    fields: set[str] = set()
    for i, key in enumerate(keys):
        found = ctx.reference("form", key, definition.doc, ("forms", i))
        if found is None:
            return None
        body = found.body if isinstance(found, Definition) else found
        if "fields" not in body:  # a stored reference taken as present, without its body
            return None
        fields.update(field_keys(body))
    return frozenset(fields)


def _check_answer_fields(definition: Definition, ctx: CompileContext, path: Path, expr: Any,
                         fields: frozenset[str] | None) -> None:
    if fields is None:
        return
    tops = {f.split(".")[0] for f in fields}
    for name, column in answer_fields(expr):
        if name not in tops:
            ctx.add(definition.doc.problem(
                "rules.unknown-field", f"the form(s) {list(definition.body['forms'])} have no "
                f"field '{name}'", path, column=column, hint=did_you_mean(name, tops)))


def _classify(definition: Definition, ctx: CompileContext) -> ClassifySpec | None:
    raw = definition.body.get("classify")
    if raw is None:
        return None
    ctx.reference("dictionary", raw["dictionary"], definition.doc, ("classify", "dictionary"))
    return ClassifySpec(dictionary=raw["dictionary"], field=raw["field"])


def _rule(definition: Definition, ctx: CompileContext, path: Path, raw: dict[str, Any],
          fields: frozenset[str] | None) -> RuleSpec | None:
    doc = definition.doc
    when = ctx.expression(doc, (*path, "when"), raw["when"], CONTEXT_NAMES)
    if when is not None:
        _check_answer_fields(definition, ctx, (*path, "when"), when, fields)
    calls = [_action(definition, ctx, (*path, "then", i), item)
             for i, item in enumerate(raw["then"])]
    if when is None or any(c is None for c in calls):
        return None
    return RuleSpec(key=raw["key"], title=MappingProxyType(dict(raw.get("title", {}))), when=when,
                    priority=int(raw.get("priority", 100)), stop=bool(raw.get("stop", False)),
                    then=tuple(c for c in calls if c is not None), watched=watched_paths(when),
                    test=when.evaluate)


def _check_unique_rule_keys(definition: Definition, ctx: CompileContext) -> None:
    seen: set[str] = set()
    for i, raw in enumerate(definition.body["rules"]):
        if raw["key"] in seen:
            ctx.add(definition.doc.problem("rules.duplicate-rule", f"rule key '{raw['key']}' "
                                           "is used twice", ("rules", i, "key")))
        seen.add(raw["key"])


@cache
def _options_validator(name: str) -> Draft202012Validator:
    registry = loaded_registry()
    spec: ActionSpec = registry.catalogue("action")[name]
    schema = copy.deepcopy(spec.schema)

    def fill(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("x-registry"), str):
                node["enum"] = sorted(registry.catalogue(node["x-registry"]).names())
            for value in node.values():
                fill(value)
        elif isinstance(node, list):
            for value in node:
                fill(value)

    fill(schema)
    return Draft202012Validator(schema)


def _action(definition: Definition, ctx: CompileContext, path: Path,
            item: dict[str, Any]) -> ActionCall | None:
    doc = definition.doc
    spec: ActionSpec | None = loaded_registry().catalogue("action").get(item["do"])
    if spec is None:  # the schema's enum reports it; nothing more to check
        return None
    ok = True
    errors = sorted(_options_validator(spec.name).iter_errors(item), key=lambda e: e.path)
    extra_at = {tuple(e.path) for e in errors if e.validator == "additionalProperties"}
    for error in errors:
        ok = False
        where = (*path, *error.path)
        if error.validator == "oneOf":
            if tuple(error.path) in extra_at:
                continue  # the unknown key is the real problem, reported below
            choices = [c.get("required", ["?"])[0] for c in error.validator_value]
            ctx.add(doc.problem("rules.bad-action-option", f"action '{spec.name}': give exactly "
                                "one of " + ", ".join(f"'{c}'" for c in choices), where))
            continue
        if error.validator == "not":  # ``decide``'s ``as`` must not hide a context name
            ctx.add(doc.problem("rules.bad-action-option", f"action '{spec.name}': "
                                f"'{error.instance}' is already a name of the rule context; "
                                "choose another", where))
            continue
        if error.validator == "additionalProperties":
            allowed = list(spec.schema["properties"])
            for extra in sorted(set(error.instance) - set(allowed)):
                ctx.add(doc.problem("rules.bad-action-option", f"action '{spec.name}' has no "
                                    f"option '{extra}'", (*where, extra), at_key=True,
                                    hint=did_you_mean(extra, allowed)))
            continue
        ctx.add(doc.problem("rules.bad-action-option",
                            f"action '{spec.name}': {error.message}", where))
    for role_path, role in _roles(item, path):
        roles = loaded_registry().catalogue("role")
        if role not in roles:
            ok = False
            ctx.add(doc.problem("rules.unknown-role", f"unknown role '{role}'", role_path,
                                hint=roles.suggest(role) or "one of: " + ", ".join(roles.names())))
    for option, kind in spec.references:
        if isinstance(item.get(option), str) and kind in loaded_registry().catalogue("kind"):
            found = ctx.reference(kind, item[option], doc, (*path, option))
            if kind == "template" and found is not None:
                ok = _check_template_values(definition, ctx, path, item, found) and ok
    for option in spec.templates:
        ok = _check_template(definition, ctx, (*path, option), item.get(option)) and ok
    if not ok:
        return None
    options = {k: v for k, v in item.items() if k != "do"}
    return ActionCall(do=spec.name, options=MappingProxyType(options))


def _check_template_values(definition: Definition, ctx: CompileContext, path: Path,
                           item: dict[str, Any], found: Definition | dict[str, Any]) -> bool:
    """A message action must give every variable its template declares."""
    body = found.body if isinstance(found, Definition) else found
    declared = body.get("variables")
    if not isinstance(declared, list):  # a stored reference taken as present, without its body
        return True
    missing = sorted(set(declared) - set(item.get("values") or {}))
    if missing:
        ctx.add(definition.doc.problem(
            "rules.missing-template-values", f"template '{item['template']}' needs values for "
            f"{missing}", (*path, "values") if "values" in item else (*path, "template"),
            at_key="values" in item))
    return not missing


def _roles(node: Any, path: Path) -> Iterator[tuple[Path, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "role" and isinstance(value, str):
                yield (*path, key), value
            else:
                yield from _roles(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _roles(value, (*path, i))


def _check_template(definition: Definition, ctx: CompileContext, path: Path, raw: Any) -> bool:
    texts = raw.items() if isinstance(raw, dict) else [(None, raw)] if isinstance(raw, str) else []
    ok = True
    for locale, text in texts:
        try:
            _ENV.parse(text)
        except TemplateSyntaxError as exc:
            ok = False
            where = path if locale is None else (*path, locale)
            ctx.add(definition.doc.problem("rules.bad-template",
                                           f"template syntax error: {exc.message}", where))
    return ok


# --- decision tables ------------------------------------------------------------------------


def compile_decision_table(definition: Definition,
                           ctx: CompileContext) -> DecisionTableSpec | None:
    """Check a decision table: input expressions, cells, outputs, overlaps (``unique``)."""
    body, doc = definition.body, definition.doc
    before = len(ctx.problems)
    inputs = []
    for i, raw in enumerate(body["inputs"]):
        expr = ctx.expression(doc, ("inputs", i, "expression"), raw["expression"],
                              CONTEXT_NAMES)
        if expr is not None:
            inputs.append(InputSpec(raw["key"], expr, tuple(raw.get("values", ()))))
    input_keys = [raw["key"] for raw in body["inputs"]]
    output_keys = [raw["key"] for raw in body["outputs"]]
    rows = [_row(definition, ctx, i, raw, input_keys, output_keys)
            for i, raw in enumerate(body["rows"])]
    if body["hit_policy"] != "collect" and "aggregate" in body:
        ctx.add(doc.problem("rules.aggregate-without-collect",
                            "'aggregate' is only allowed with hit policy 'collect'", ("aggregate",),
                            at_key=True))
    good_rows = [r for r in rows if r is not None]
    if body["hit_policy"] == "unique":
        for first, second in overlapping_rows(good_rows):
            ctx.add(doc.problem(
                "rules.overlapping-rows", f"rows {first.index + 1} and {second.index + 1} can "
                "both match the same input under hit policy 'unique'", ("rows", second.index),
                hint="narrow one row's cells, or use hit policy 'first' or 'priority'"))
    for key, value in uncovered_values(inputs, good_rows):
        ctx.add(doc.problem("rules.uncovered-input", f"no row covers input '{key}' = {value!r}",
                            ("inputs", input_keys.index(key), "values"), severity="warning"))
    if any(p.severity == "error" for p in ctx.problems[before:]) or None in rows:
        return None
    return DecisionTableSpec(key=definition.key, title=MappingProxyType(dict(definition.title)),
                             hit_policy=body["hit_policy"], aggregate=body.get("aggregate"),
                             inputs=tuple(inputs), outputs=tuple(output_keys),
                             rows=tuple(good_rows))


def _row(definition: Definition, ctx: CompileContext, index: int, raw: dict[str, Any],
         input_keys: list[str], output_keys: list[str]) -> RowSpec | None:
    doc, ok = definition.doc, True
    cells = {}
    for name, text in (raw.get("when") or {}).items():
        path = ("rows", index, "when", name)
        if name not in input_keys:
            ok = False
            ctx.add(doc.problem("rules.unknown-input", f"no input '{name}'", path, at_key=True,
                                hint=did_you_mean(name, input_keys)))
            continue
        try:
            cells[name] = parse_cell(text)
        except CellError as exc:
            ok = False
            ctx.add(doc.problem("rules.bad-cell", str(exc), path))
    for name in raw["then"]:
        if name not in output_keys:
            ok = False
            ctx.add(doc.problem("rules.unknown-output", f"no output '{name}'",
                                ("rows", index, "then", name), at_key=True,
                                hint=did_you_mean(name, output_keys)))
    if not ok:
        return None
    return RowSpec(index=index, cells=MappingProxyType(cells),
                   outputs=MappingProxyType(dict(raw["then"])),
                   priority=int(raw.get("priority", 0)))


# --- dictionaries ---------------------------------------------------------------------------


def compile_dictionary(definition: Definition, ctx: CompileContext) -> DictionarySpec | None:
    """Check a keyword dictionary (no word in two categories) and build its spec."""
    body, doc = definition.body, definition.doc
    owner: dict[str, str] = {}
    categories = []
    ok = True
    for i, raw in enumerate(body["categories"]):
        terms: dict[str, str] = {}
        for j, word in enumerate(raw["keywords"]):
            terms[word] = word
            for synonym in (raw.get("synonyms") or {}).get(word, []):
                terms[synonym] = word
            if word not in owner:
                continue
            ok = False
            ctx.add(doc.problem("rules.duplicate-keyword", f"keyword '{word}' is already in "
                                f"category '{owner[word]}'", ("categories", i, "keywords", j)))
        for word in (raw.get("synonyms") or {}):
            if word not in raw["keywords"]:
                ok = False
                ctx.add(doc.problem("rules.unknown-keyword", f"synonyms of '{word}', which is "
                                    "not a keyword of this category",
                                    ("categories", i, "synonyms", word), at_key=True,
                                    hint=did_you_mean(word, raw["keywords"])))
        owner.update({w: raw["key"] for w in terms})
        categories.append(CategorySpec(raw["key"], MappingProxyType(dict(raw["title"])),
                                       MappingProxyType(terms)))
    if not ok:
        return None
    return DictionarySpec(key=definition.key, title=MappingProxyType(dict(definition.title)),
                          negations=tuple(body.get("negations", ())),
                          window=int(body.get("window", 3)), categories=tuple(categories))
