"""The form compiler: a checked definition becomes a :class:`FormSpec`.

A list of small checkers, each appending located problems (structure was checked by the schema):

    fields:  - {key: q1, type: single_choice, choices: [{code: "0", label: …, score: 0}, …]}
             - {key: q2, type: integer, visible_if: "answers.q1 == '3'", min: 0}
    ──▶ FormSpec(key=…, fields=(FieldSpec("q1", …), FieldSpec("q2", …)), field_keys={"q1", "q2"})
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator, Mapping
from typing import Any

from jsonschema import Draft202012Validator

from careloop.engine.check import CompileContext, Definition
from careloop.engine.errors import Path, did_you_mean
from careloop.engine.expressions import Expression
from careloop.engine.registry import loaded_registry
from careloop.engine.schema import compose
from careloop.engine.sources import Document
from careloop.forms.fields import FieldType
from careloop.forms.scoring import COMMON_SCORE_KEYS, ScoreMethod
from careloop.forms.spec import (
    BandSpec,
    ChoiceSpec,
    FieldSpec,
    FormSpec,
    ScoreSpec,
    ValidationSpec,
)

# Keys every field may carry; anything else must be an option of the field's type.
COMMON_KEYS = frozenset({"key", "type", "label", "help", "required", "visible_if", "required_if",
                         "enabled_if", "calculate", "default", "choices", "rows", "validations",
                         "fields", "code", "link_id", "visible_if_fhirpath", "repeats",
                         "read_only", "identifier", "choices_fhirpath", "default_fhirpath"})
FIELD_NAMES = ("answers", "patient", "encounter", "value")
SCORE_NAMES = ("answers", "scores", "patient", "encounter")
PIPE = re.compile(r"\{\{\s*([a-z][a-z0-9_]*)\s*\}\}")


def field_types() -> dict[str, FieldType]:
    return dict(loaded_registry().catalogue("field_type").items())


def field_keys(body: Mapping[str, Any]) -> frozenset[str]:
    """Every answerable key of a form body (repeat sub-fields as ``group.sub``).

    >>> sorted(field_keys({"fields": [{"key": "a", "type": "integer"},
    ...     {"key": "intro", "type": "display"},
    ...     {"key": "meds", "type": "repeat_group",
    ...      "fields": [{"key": "name", "type": "short_text"}]}]}))
    ['a', 'meds', 'meds.name']
    """
    types = field_types()
    keys: set[str] = set()
    for item in body.get("fields") or ():
        if not isinstance(item, Mapping) or not isinstance(item.get("key"), str):
            continue
        ftype = types.get(str(item.get("type")))
        if ftype is not None and not ftype.answerable:
            continue
        keys.add(item["key"])
        for sub in item.get("fields") or ():
            if isinstance(sub, Mapping) and isinstance(sub.get("key"), str):
                keys.add(f"{item['key']}.{sub['key']}")
    return frozenset(keys)


class _Compiler:
    """Compiles one form definition; collects problems on the context."""

    def __init__(self, definition: Definition, ctx: CompileContext) -> None:
        self.definition = definition
        self.doc: Document = definition.doc
        self.ctx = ctx
        self.types = field_types()
        body = definition.body
        self.top_keys = {f["key"] for f in body["fields"]}
        self.sub_keys = {f["key"]: {s["key"] for s in f.get("fields", [])}
                         for f in body["fields"]}
        self.errors_before = len(ctx.problems)

    def problem(self, code: str, message: str, path: Path, *, at_key: bool = False,
                hint: str | None = None, column: int | None = None) -> None:
        self.ctx.add(self.doc.problem(code, message, path, at_key=at_key, hint=hint,
                                      column=column))

    # -- expressions -----------------------------------------------------------------------
    def expression(self, path: Path, text: object, names: tuple[str, ...],
                   group: str | None = None) -> Expression | None:
        allowed = (*names, "row") if group else names
        expr = self.ctx.expression(self.doc, path, text, allowed)
        if expr is not None:
            self._check_references(path, expr, group)
        return expr

    def _check_references(self, path: Path, expr: Expression, group: str | None) -> None:
        for root, key, node in _member_reads(expr.tree):
            known = self.top_keys if root == "answers" else self.sub_keys.get(group or "", set())
            if root in ("answers", "row") and key not in known:
                lead = len(expr.source) - len(expr.source.lstrip())
                self.problem("form.unknown-field-reference",
                             f"{root}.{key} names no field of this form", path,
                             hint=did_you_mean(key, known),
                             column=lead + getattr(node, "col_offset", 0) + 1)

    # -- fields ----------------------------------------------------------------------------
    def fields(self, items: list[dict[str, Any]], base: Path, group: str | None = None,
               page: int = 0) -> tuple[tuple[FieldSpec, ...], int]:
        seen: dict[str, Path] = {}
        out: list[FieldSpec] = []
        for index, item in enumerate(items):
            path = (*base, index)
            if item["key"] in seen:
                self.problem("form.duplicate-field-key",
                             f"field key '{item['key']}' is already used at "
                             f"{_fmt_path(seen[item['key']])}", (*path, "key"))
            seen.setdefault(item["key"], path)
            if self.types[item["type"]].breaks_page:
                page += 1
            spec = self.field(item, path, group, page)
            if spec is not None:
                out.append(spec)
        return tuple(out), page

    def field(self, item: dict[str, Any], path: Path, group: str | None,
              page: int) -> FieldSpec | None:
        ftype = self.types[item["type"]]
        options = {k: v for k, v in item.items() if k not in COMMON_KEYS}
        self._check_options(ftype, options, path)
        self._check_shape(ftype, item, path, group)
        choices = self.choices(item.get("choices", []), (*path, "choices"), group)
        rows = self.choices(item.get("rows", []), (*path, "rows"), group)
        sub: tuple[FieldSpec, ...] = ()
        if ftype.group and "fields" in item:
            sub, _ = self.fields(item["fields"], (*path, "fields"), item["key"], page)
        self._check_pipes(item, path)
        names = FIELD_NAMES
        return FieldSpec(
            key=item["key"], type=item["type"], label=item.get("label", {}),
            help=item.get("help", {}), required=bool(item.get("required", False)),
            visible_if=self.expression((*path, "visible_if"), item.get("visible_if"), names, group),
            required_if=self.expression((*path, "required_if"), item.get("required_if"), names,
                                        group),
            enabled_if=self.expression((*path, "enabled_if"), item.get("enabled_if"), names,
                                       group),
            calculate=self.expression((*path, "calculate"), item.get("calculate"), names, group),
            choices=choices, rows=rows,
            validations=tuple(
                ValidationSpec(expr, v["message"])
                for i, v in enumerate(item.get("validations", []))
                if (expr := self.expression((*path, "validations", i, "expression"),
                                            v["expression"], names, group)) is not None),
            fields=sub, options=options, page=page, code=item.get("code", {}),
            link_id=item.get("link_id"),
            visible_fhirpath=self._fhirpath_condition(item, path, group),
            choices_fhirpath=self._fhirpath_population(ftype, item, path, group,
                                                       "choices_fhirpath"),
            default_fhirpath=self._fhirpath_population(ftype, item, path, group,
                                                       "default_fhirpath"),
            default=self._default(item, path, choices),
            repeats=self._repeats(ftype, item, path),
            read_only=self._read_only(ftype, item, path),
            identifier=bool(item.get("identifier", False)))

    def _read_only(self, ftype: FieldType, item: dict[str, Any], path: Path) -> bool:
        """Read-only fields are drawn as plain inputs the browser does not let one edit."""
        if not item.get("read_only"):
            return False
        if not ftype.repeatable:
            self.problem("form.read-only", f"a field of type '{ftype.name}' cannot be "
                         "read-only (text, number, date and time fields can)",
                         (*path, "read_only"))
            return False
        return True

    def _repeats(self, ftype: FieldType, item: dict[str, Any], path: Path) -> bool:
        if not item.get("repeats"):
            return False
        if not ftype.repeatable:
            repeatable = sorted(n for n, t in self.types.items() if t.repeatable)
            self.problem("form.repeats", f"a field of type '{ftype.name}' cannot repeat (types "
                         f"that can: {', '.join(repeatable)})", (*path, "repeats"))
            return False
        return True

    def _fhirpath_condition(self, item: dict[str, Any], path: Path,
                            group: str | None) -> dict[str, Any] | None:
        """``visible_if_fhirpath`` checked as FHIRPath (each variable, then the text)."""
        found = item.get("visible_if_fhirpath")
        if not isinstance(found, dict):
            return None
        at = (*path, "visible_if_fhirpath")
        if group is not None:
            self.problem("form.fhirpath", "a FHIRPath condition inside a repeat group: it is "
                         "evaluated on the whole response, not on a row", at)
        self._check_fhirpath(found, at)
        return dict(found)

    def _fhirpath_population(self, ftype: FieldType, item: dict[str, Any], path: Path,
                             group: str | None, name: str) -> dict[str, Any] | None:
        """``choices_fhirpath`` (on a single or multiple choice) and ``default_fhirpath``
        (beside no ``default``), checked as FHIRPath; not inside a repeat group (they are
        evaluated on the whole response, not on a row)."""
        found = item.get(name)
        if not isinstance(found, dict):
            return None
        at = (*path, name)
        if name == "choices_fhirpath" and ftype.name not in ("single_choice",
                                                              "multiple_choice"):
            self.problem("form.fhirpath", f"computed choices on a '{ftype.name}' field (only "
                         "single and multiple choices have choices)", at, at_key=True)
        if name == "default_fhirpath" and item.get("default") is not None:
            self.problem("form.fhirpath", "a computed default beside 'default'", at,
                         at_key=True)
        if group is not None:
            self.problem("form.fhirpath", "a FHIRPath expression inside a repeat group: it is "
                         "evaluated on the whole response, not on a row", at, at_key=True)
        self._check_fhirpath(found, at)
        return dict(found)

    def _check_fhirpath(self, found: Mapping[str, Any], at: Path) -> None:
        from careloop.forms.fhirpath import check_expression

        for index, variable in enumerate(found.get("variables", []) or []):
            problem = check_expression(str(variable.get("expression", "")))
            if problem:
                self.problem("form.fhirpath", problem, (*at, "variables", index, "expression"))
        problem = check_expression(str(found.get("expression", "")))
        if problem:
            self.problem("form.fhirpath", problem, (*at, "expression"))

    def _default(self, item: dict[str, Any], path: Path,
                 choices: tuple[ChoiceSpec, ...]) -> Any:
        """``default`` checked as an answer of the field's type (the page starts with it)."""
        if "default" not in item or item["default"] is None:
            return None
        ftype = self.types[item["type"]]
        probe = FieldSpec(key=item["key"], type=item["type"],
                          options={k: v for k, v in item.items() if k not in COMMON_KEYS},
                          choices=choices)
        if item.get("repeats") and isinstance(item["default"], list):
            checked = [ftype.check(probe, one) for one in item["default"]]
            value = [one for one, _ in checked]
            issues = [i for _, found in checked for i in found]
        else:
            value, issues = ftype.check(probe, item["default"])
        if issues:
            self.problem("form.default", f"default {item['default']!r} is not an answer of a "
                         f"'{ftype.name}' field ({issues[0][1]})", (*path, "default"))
            return None
        return value

    def _check_options(self, ftype: FieldType, options: dict[str, Any], path: Path) -> None:
        allowed = list(ftype.options)
        for name in sorted(set(options) - set(allowed)):
            self.problem("form.unknown-option",
                         f"unknown key '{name}' for a field of type '{ftype.name}'",
                         (*path, name), at_key=True,
                         hint=did_you_mean(name, [*allowed, *COMMON_KEYS]))
        validator = Draft202012Validator({"$defs": _defs(), "type": "object",
                                          "properties": ftype.options})
        for error in validator.iter_errors({k: v for k, v in options.items() if k in allowed}):
            self.problem("form.option", f"option {error.message}",
                         (*path, *error.absolute_path))

    def _check_shape(self, ftype: FieldType, item: dict[str, Any], path: Path,
                     group: str | None) -> None:
        key = item["key"]
        if ftype.uses_choices and "choices" not in item and "choices_fhirpath" not in item:
            self.problem("form.missing-choices", f"field '{key}' of type '{ftype.name}' needs "
                         "'choices'", path)
        if ftype.uses_rows and "rows" not in item:
            self.problem("form.missing-rows", f"field '{key}' needs 'rows'", path)
        if ftype.group:
            if group is not None:
                self.problem("form.nested-repeat", "a repeat group cannot contain another",
                             path)
            if "fields" not in item:
                self.problem("form.missing-fields", f"repeat group '{key}' needs 'fields'", path)
        elif "fields" in item:
            self.problem("form.unexpected-fields", "only a repeat group has 'fields'",
                         (*path, "fields"), at_key=True)
        if ftype.computed and "calculate" not in item:
            self.problem("form.missing-calculate", f"calculated field '{key}' needs 'calculate'",
                         path)
        if ftype.breaks_page and group is not None:
            self.problem("form.page-in-group", "a page break cannot be inside a repeat group",
                         path)

    def _check_pipes(self, item: dict[str, Any], path: Path) -> None:
        for locale, text in (item.get("label") or {}).items():
            for match in PIPE.finditer(text):
                if match.group(1) not in self.top_keys:
                    self.problem("form.unknown-field-reference",
                                 f"'{{{{ {match.group(1)} }}}}' names no field of this form",
                                 (*path, "label", locale),
                                 hint=did_you_mean(match.group(1), self.top_keys))

    def choices(self, items: list[dict[str, Any]], base: Path,
                group: str | None) -> tuple[ChoiceSpec, ...]:
        out: list[ChoiceSpec] = []
        seen: set[str] = set()
        for index, item in enumerate(items):
            code = str(item["code"])
            if code in seen:
                self.problem("form.duplicate-choice-code", f"choice code '{code}' is used twice",
                             (*base, index, "code"))
            seen.add(code)
            out.append(ChoiceSpec(
                code=code, label=item["label"],
                score=float(item["score"]) if "score" in item else None,
                exclusive=bool(item.get("exclusive", False)), other=bool(item.get("other", False)),
                visible_if=self.expression((*base, index, "visible_if"), item.get("visible_if"),
                                           FIELD_NAMES, group)))
        return tuple(out)

    # -- scores ----------------------------------------------------------------------------
    def scores(self, items: list[dict[str, Any]]) -> tuple[ScoreSpec, ...]:
        out: list[ScoreSpec] = []
        seen: set[str] = set()
        for index, item in enumerate(items):
            path: Path = ("scores", index)
            if item["key"] in seen:
                self.problem("form.duplicate-score-key", f"score key '{item['key']}' is used twice",
                             (*path, "key"))
            seen.add(item["key"])
            for i, name in enumerate(item.get("fields", [])):
                if name.split(".")[0] not in self.top_keys:
                    self.problem("form.unknown-field-reference",
                                 f"score field '{name}' names no field of this form",
                                 (*path, "fields", i), hint=did_you_mean(name, self.top_keys))
            method = self.method(item, path)
            if method is None:
                continue
            out.append(ScoreSpec(
                key=item["key"], method=method.name, label=item.get("label", {}),
                fields=tuple(item.get("fields", [])),
                weights={k: float(v) for k, v in item.get("weights", {}).items()},
                codes=frozenset(str(c) for c in item.get("codes", [])),
                threshold=item.get("threshold"),
                expression=self.expression((*path, "expression"), item.get("expression"),
                                           SCORE_NAMES),
                min_answered=item.get("min_answered"),
                bands=tuple(BandSpec(b["code"], b["label"], b.get("min"), b.get("max"))
                            for b in item.get("bands", [])),
                options={k: v for k, v in item.items() if k not in COMMON_SCORE_KEYS}))
        return tuple(out)

    def method(self, item: dict[str, Any], path: Path) -> ScoreMethod | None:
        """The score's method, its options checked against the method's own schema."""
        name = item["method"]
        before = len(self.ctx.problems)
        method = loaded_registry().catalogue("score_method").get(name)
        if not isinstance(method, ScoreMethod):
            self.problem("form.score-method-incomplete",
                         f"score method '{name}' is registered without a compute (a "
                         "ScoreMethod), so it could only ever score nothing", (*path, "method"))
            return None
        options = {k: v for k, v in item.items() if k not in COMMON_SCORE_KEYS}
        allowed = list(method.options)
        for key in sorted(set(options) - set(allowed)):
            self.problem("form.unknown-option",
                         f"unknown key '{key}' for a score of method '{name}'", (*path, key),
                         at_key=True, hint=did_you_mean(key, [*allowed, *COMMON_SCORE_KEYS]))
        for key in method.required:
            if key not in options:
                self.problem(f"form.missing-{key}", f"method '{name}' needs '{key}'", path)
        if method.needs_fields and not item.get("fields"):
            self.problem("form.missing-fields", f"method '{name}' needs 'fields'", path)
        validator = Draft202012Validator({"$defs": _defs(), "type": "object",
                                          "properties": method.options})
        for error in validator.iter_errors({k: v for k, v in options.items() if k in allowed}):
            self.problem("form.option", f"option {error.message}",
                         (*path, *error.absolute_path))
        for sub, code, message in method.check(item, frozenset(self.top_keys)):
            self.problem(code, message, (*path, *sub))
        return method if len(self.ctx.problems) == before else None

    # -- readings --------------------------------------------------------------------------
    def readings(self, items: list[dict[str, Any]]) -> tuple[tuple[str, str, str | None], ...]:
        out: list[tuple[str, str, str | None]] = []
        types = {f.get("key"): f.get("type") for f in _walk_fields(self.doc.data)}
        for index, item in enumerate(items):
            path: Path = ("readings", index)
            for name in ("field", "measured_at"):
                key = item.get(name)
                if key is not None and key not in self.top_keys:
                    self.problem("form.unknown-field-reference",
                                 f"reading {name} '{key}' names no field of this form",
                                 (*path, name), hint=did_you_mean(key, self.top_keys))
            field_type = types.get(item["field"])
            allowed = _READING_FIELD_TYPES.get(item["type"], _NUMERIC)
            if field_type is not None and field_type not in allowed:
                self.problem("form.reading-field-type",
                             f"a {item['type']} reading needs a field of type "
                             f"{' or '.join(allowed)}, not '{field_type}'", (*path, "field"))
            measured = item.get("measured_at")
            if measured is not None and types.get(measured) not in (None, "datetime", "date"):
                self.problem("form.reading-field-type",
                             f"measured_at needs a datetime or date field, not "
                             f"'{types.get(measured)}'", (*path, "measured_at"))
            out.append((item["type"], item["field"], measured))
        return tuple(out)

    # -- import ----------------------------------------------------------------------------
    def unresolved(self, items: list[dict[str, Any]]) -> None:
        """What an import could not carry blocks publishing until the author resolves it."""
        for index, item in enumerate(items):
            where = ", ".join(f"line {item[k]}" if k == "line" else str(item[k])
                              for k in ("line", "column", "field") if k in item)
            self.problem("form.import-unresolved",
                         f"not imported: {where + ': ' if where else ''}{item['message']}",
                         ("import", "unresolved", index),
                         hint="resolve it in the form, then remove this entry")


def _defs() -> dict[str, Any]:
    defs: dict[str, Any] = compose("careloop.forms", "schema/form.json", envelope=False)["$defs"]
    return defs


def _walk_fields(data: Any) -> Iterator[dict[str, Any]]:
    for item in (data or {}).get("fields", []) if isinstance(data, dict) else []:
        if isinstance(item, dict):
            yield item


_READING_FIELD_TYPES = {"blood_pressure": ("blood_pressure",)}
_NUMERIC = ("measurement", "integer", "decimal", "slider")


def _member_reads(tree: ast.AST) -> Iterator[tuple[str, str, ast.AST]]:
    """``answers.x`` and ``answers["x"]`` reads in an expression: (root, key, node)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            yield node.value.id, node.attr, node
        elif (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name)
              and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str)):
            yield node.value.id, node.slice.value, node


def _fmt_path(path: Path) -> str:
    from careloop.engine.errors import format_path

    return format_path(path)


def compile_form(definition: Definition, ctx: CompileContext) -> FormSpec | None:
    """Check a form's meaning and build its spec (``None`` when it has errors)."""
    compiler = _Compiler(definition, ctx)
    body = definition.body
    fields, last_page = compiler.fields(body["fields"], ("fields",))
    scores = compiler.scores(body.get("scores", []))
    readings = compiler.readings(body.get("readings", []))
    compiler.unresolved(body.get("import", {}).get("unresolved", []))
    if any(p.severity == "error" for p in ctx.problems[compiler.errors_before:]):
        return None
    return FormSpec(key=definition.key, title=body["title"],
                    default_locale=body.get("default_locale", "zh-CN"), fields=fields,
                    scores=scores, events=tuple(body.get("events", [])), readings=readings,
                    field_keys=field_keys(body), pages=last_page + 1,
                    content_hash=definition.content_hash, meta=dict(body.get("fhir", {})))
