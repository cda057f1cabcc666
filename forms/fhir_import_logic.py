"""Conditions and calculations of a FHIR Questionnaire import: ``enableWhen`` translated to
Careloop expressions, ``enableWhenExpression`` and ``calculatedExpression`` kept as FHIRPath
(evaluated on the server), SDC ``variable`` extensions in scope."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from careloop.forms.fhir_import_base import (
    CAREL_EXPR,
    KNOWN_TOTALS,
    LOINC,
    ImportState,
    Scope,
    safe_code,
)
from careloop.forms.fhirpath import check_expression


class LogicImport(ImportState):
    """The conditions and calculations of one import."""

    # -- conditions ------------------------------------------------------------------------
    def conditions(self, item: dict[str, Any], scope: Scope,
                   exts: dict[str, list[dict[str, Any]]], body: dict[str, Any]) -> str | None:
        where = scope.path
        found: list[str] = []
        for index, when in enumerate(item.get("enableWhen", []) or []):
            expr = self.condition(when, scope, f"{where}.enableWhen[{index}]")
            if expr is None:
                return None
            found.append(expr)
        expression = exts.pop("sdc-questionnaire-enableWhenExpression", [])
        if expression:
            value = expression[0].get("valueExpression", {})
            if value.get("language") == CAREL_EXPR:
                found.append(str(value.get("expression")))
            else:
                self.fhirpath_condition(item, scope, value, body)
        if not found:
            return None
        joiner = " or " if item.get("enableBehavior") == "any" else " and "
        return joiner.join(f"({c})" if len(found) > 1 else c for c in found)

    def fhirpath_condition(self, item: Mapping[str, Any], scope: Scope,
                           value: Mapping[str, Any], body: dict[str, Any]) -> None:
        """``enableWhenExpression`` in FHIRPath → ``visible_if_fhirpath`` (with the variables
        in scope), evaluated on the server for the page and for every submission."""
        where = f"{scope.path}.extension[sdc-questionnaire-enableWhenExpression]"
        expression = self.rename(str(value.get("expression", "")))
        if value.get("language") != "text/fhirpath":
            self.refuse(where, f"a condition in {value.get('language')!r}: only FHIRPath and "
                        "Careloop expressions are evaluated")
        elif problem := check_expression(expression):
            self.refuse(where, problem)
        elif scope.group:
            self.refuse(where, "a FHIRPath condition inside a repeating group (it would be "
                        "evaluated on the whole response, not on its row)")
        elif item.get("item") or item.get("type") == "group":
            self.refuse(where, "a FHIRPath condition on an item with nested items (they would "
                        "not inherit it)")
        elif not self.relative(expression, where, True):
            condition: dict[str, Any] = {"expression": expression}
            if scope.variables:
                condition["variables"] = list(scope.variables)
            body["visible_if_fhirpath"] = condition

    def condition(self, when: Mapping[str, Any], scope: Scope, where: str) -> str | None:
        link = str(when.get("question"))
        question = self.keys.get(link)
        if question is None:
            self.refuse(f"{where}.question", f"enableWhen names no item {link!r}")
            return None
        if question in self.score_keys:
            self.refuse(f"{where}.question", "a condition on a calculated item: field "
                        "conditions cannot read a score")
            return None
        in_group = self.groups.get(question)
        if in_group and in_group != scope.group:
            self.refuse(f"{where}.question", "a condition on an answer inside a repeating "
                        "group, from outside it")
            return None
        root = "row" if in_group and in_group == scope.group else "answers"
        ref = f"{root}.{question}"
        op = str(when.get("operator", "="))
        answer = next(((k, v) for k, v in when.items() if k.startswith("answer")), None)
        if answer is None:
            self.refuse(where, "an enableWhen without an answer")
            return None
        name, value = answer
        if op == "exists":
            return f"{ref} {'!=' if value else '=='} None"
        ops = {"=": "==", "!=": "!=", ">": ">", "<": "<", ">=": ">=", "<=": "<="}
        if op not in ops:
            self.refuse(f"{where}.operator", f"operator {op!r}")
            return None
        kind = self.kinds.get(question, "")
        if name == "answerCoding":
            literal = repr(safe_code(str(value.get("code"))))
        elif name == "answerBoolean":
            literal = repr("yes" if value else "no")
        elif name == "answerQuantity":
            self.refuse(where, "a condition on a quantity")
            return None
        elif kind in ("single_choice", "multiple_choice"):
            literal = repr(safe_code(str(value)))
        else:
            literal = repr(value)
        if kind == "multiple_choice":
            if op not in ("=", "!="):
                self.refuse(f"{where}.operator", "an order comparison on a multiple choice")
                return None
            return f"{literal} {'in' if op == '=' else 'not in'} {ref}"
        return f"{ref} {ops[op]} {literal}"

    # -- calculations ----------------------------------------------------------------------
    def variable(self, ext: Mapping[str, Any], where: str, on_item: bool = True
                 ) -> dict[str, str] | None:
        """An SDC variable in FHIRPath (``None`` when refused). A name that is not an R4 id
        (``q1_value``) is renamed (``q1value``) here and in every expression that reads it, so
        the export validates."""
        value = ext.get("valueExpression", {})
        if value.get("language") != "text/fhirpath":
            self.refuse(where, f"a variable in {value.get('language')!r}: only FHIRPath is "
                        "evaluated")
            return None
        name = str(value.get("name"))
        if not re.fullmatch(r"[A-Za-z0-9]{1,64}", name):
            renamed = re.sub(r"[^A-Za-z0-9]", "", name) or "v"
            while renamed in self.renames.values() and self.renames.get(name) != renamed:
                renamed += "x"
            self.renames[name] = renamed
            name = renamed
        expression = self.rename(str(value.get("expression", "")))
        problem = check_expression(expression)
        if problem:
            self.refuse(where, problem)
            return None
        if self.relative(expression, where, on_item):
            return None
        return {"name": name, "expression": expression}

    def relative(self, expression: str, where: str, on_item: bool) -> bool:
        """An expression on an item is evaluated with that item's answer as its context;
        Careloop evaluates on the whole response, so a path that does not start from a
        ``%`` variable, a literal or a function is refused there (at the Questionnaire level
        the context is the response, and it is carried)."""
        if on_item and re.match(r"\s*[A-Za-z_][A-Za-z0-9_]*\s*(?:[.\[]|$)", expression) and \
                not re.match(r"\s*(true|false)\b", expression):
            self.refuse(where, f"{expression!r} is relative to its item: Careloop evaluates "
                        "FHIRPath on the whole response, so its context would differ")
            return True
        return False

    def rename(self, expression: str) -> str:
        for old, new in self.renames.items():
            expression = re.sub(rf"%{re.escape(old)}\b", f"%{new}", expression)
        return expression

    def calculated(self, item: dict[str, Any], scope: Scope, key: str, kind: str,
                   ext: Mapping[str, Any], label: dict[str, str], codes: list[dict[str, Any]],
                   meta: dict[str, Any], exts: dict[str, list[dict[str, Any]]],
                   position: int) -> None:
        where = f"{scope.path}.extension[sdc-questionnaire-calculatedExpression]"
        value = ext.get("valueExpression", {})
        expression = self.rename(str(value.get("expression", "")))
        if value.get("language") != "text/fhirpath":
            self.refuse(where, f"a calculation in {value.get('language')!r}")
        elif problem := check_expression(expression):
            self.refuse(where, problem)
        else:
            self.relative(expression, where, True)
        if kind not in ("decimal", "integer", "quantity"):
            self.refuse(where, f"a calculated {kind} item: a score is a number")
        if scope.group:
            self.refuse(where, "a calculation inside a repeating group (one value per row)")
        if item.get("item"):
            self.refuse(f"{scope.path}.item", "items nested under a calculated item")
        if item.get("enableWhen") or "sdc-questionnaire-enableWhenExpression" in exts:
            self.refuse(f"{scope.path}.enableWhen", "a condition on a calculated item")
            exts.pop("sdc-questionnaire-enableWhenExpression", None)
        exts.pop("questionnaire-itemControl", None)
        for name in ("questionnaire-unit",):
            found = exts.pop(name, [])
            if found:
                meta["unit"] = {k: v for k, v in found[0].get("valueCoding", {}).items()
                                if k in ("system", "code", "display")}
        self.rest(exts, item, scope.path)
        self.score_keys.add(key)
        name = str(item.get("linkId"))
        score: dict[str, Any] = {"key": key, "label": label or {self.locale: name},
                                 "method": "fhirpath", "fhirpath": expression,
                                 "link_id": str(item.get("linkId"))}
        if scope.variables:
            score["variables"] = scope.variables
        loinc = next((c.get("code") for c in codes if c.get("system") == LOINC), None)
        if loinc in KNOWN_TOTALS:
            score["bands"] = KNOWN_TOTALS[str(loinc)]
        meta["position"] = position
        meta["type"] = kind
        if codes:
            meta["code"] = codes
        if item.get("readOnly"):
            meta["readOnly"] = True
        self.items_meta[key] = meta
        self.scores.append(score)


    # -- SDC initialExpression and answerExpression ----------------------------------------
    def reads(self, expression: str, variables: list[dict[str, str]]) -> set[str]:
        """The ``%`` names ``expression`` reads, through the variables it reads (in scope)."""
        by_name = {v["name"]: v["expression"] for v in variables}
        found: set[str] = set()
        todo = [expression]
        while todo:
            for name in _PERCENT.findall(todo.pop()):
                name = name.strip("`'")
                if name not in found:
                    found.add(name)
                    if name in by_name:
                        todo.append(by_name[name])
        return found

    def population(self, name: str, ext: Mapping[str, Any], scope: Scope, where: str,
                   *, answers: bool) -> list[Any] | dict[str, Any] | None:
        """An ``initialExpression`` (``answers=False``) or ``answerExpression`` evaluated once,
        on the server, as the form is populated: an empty QuestionnaireResponse, the
        Questionnaire as ``%questionnaire``, the variables in scope, inside Careloop's limits.
        When its value is not that constant — it reads the clock, or (answer options) the
        answers — the expression is carried to be evaluated on the server per page and per
        submission: a dict (``{"expression", "variables"}``) is returned instead of values.
        ``None`` (refused) when it reads the launch context (``%patient``…), or is dynamic
        and reads ``%questionnaire`` (which Careloop rewrites) or sits in a repeating group."""
        from careloop.engine.limits import LimitExceeded
        from careloop.forms.fhirpath import FhirPathError, run

        value = ext.get("valueExpression", {})
        at = f"{where}.extension[{name}]"
        expression = self.rename(str(value.get("expression", "")))
        if value.get("language") != "text/fhirpath":
            self.refuse(at, f"an expression in {value.get('language')!r}: only FHIRPath is "
                        "evaluated")
            return None
        if problem := check_expression(expression):
            self.refuse(at, problem)
            return None
        if self.relative(expression, at, True):
            return None
        read = self.reads(expression, scope.variables)
        texts = [expression] + [v["expression"] for v in scope.variables if v["name"] in read]
        declared = {v["name"] for v in scope.variables}
        outside = sorted(n for n in read - declared - _RESPONSE - {"questionnaire"}
                         if n not in _CONSTANTS and not n.startswith(("vs-", "ext-")))
        if outside:
            self.refuse(at, f"reads %{outside[0]}: pre-population from the launch context "
                        "(patient, encounter, user…) is not carried")
            return None
        if any(_CLOCK.search(t) for t in texts) or (answers and read & _RESPONSE):
            if "questionnaire" in read:
                self.refuse(at, "a value computed per page that reads %questionnaire: "
                            "Careloop rewrites the Questionnaire it would read")
                return None
            if scope.group:
                self.refuse(at, "a value computed per page inside a repeating group (it "
                            "would be evaluated on the whole response, not on its row)")
                return None
            dynamic: dict[str, Any] = {"expression": expression}
            if scope.variables:
                dynamic["variables"] = list(scope.variables)
            return dynamic
        empty = {"resourceType": "QuestionnaireResponse", "status": "in-progress", "item": []}
        try:
            return run(expression, scope.variables, empty, self.q)
        except (FhirPathError, LimitExceeded) as exc:
            self.refuse(at, f"the expression fails: {exc}")
            return None

    def kept(self, expression: Mapping[str, Any], scope: Scope) -> dict[str, Any] | None:
        """What the export writes back: the expression (and the variables in scope), unless it
        reads ``%questionnaire`` — the export rewrites the Questionnaire, so there the value
        it gave is carried instead (``initial`` / ``answerOption``), which is exact: a
        population expression is evaluated once, on an empty response."""
        text = self.rename(str(expression.get("expression", "")))
        if "questionnaire" in self.reads(text, scope.variables):
            return None
        out: dict[str, Any] = {"expression": text}
        if scope.variables:
            out["variables"] = list(scope.variables)
        return out

    def answer_expression(self, item: dict[str, Any], scope: Scope, kind: str,
                          exts: dict[str, list[dict[str, Any]]], meta: dict[str, Any],
                          body: dict[str, Any]) -> dict[str, Any]:
        """``answerExpression`` on a choice item → its choices (``item`` with the options the
        expression gives as ``answerOption``), or — when they follow the answers or the clock
        — ``choices_fhirpath`` on ``body``, computed on the server from the answers so far."""
        found = exts.pop("sdc-questionnaire-answerExpression", [])
        if not found:
            return item
        at = f"{scope.path}.extension[sdc-questionnaire-answerExpression]"
        if item.get("answerOption") or item.get("answerValueSet"):
            self.refuse(at, "an answerExpression beside answerOption or answerValueSet")
            return item
        if kind not in ("choice", "open-choice", "coding", "string", "integer", "date", "time"):
            self.refuse(at, f"answer options on a {kind} item")
            return item
        result = self.population("sdc-questionnaire-answerExpression", found[0], scope,
                                 scope.path, answers=True)
        if result is None:
            return {**item, "answerOption": [{"valueString": "unresolved"}]}
        if isinstance(result, dict):
            body["choices_fhirpath"] = result
            return item
        options = [_option_of(v) for v in result]
        if not options or any(o is None for o in options):
            self.refuse(at, "the expression gives no answer options, or values that are not "
                        "codings, text, whole numbers, dates or times")
            return {**item, "answerOption": [{"valueString": "unresolved"}]}
        kept = self.kept(found[0].get("valueExpression", {}), scope)
        if kept is not None:
            meta["answer_expression"] = kept
        return {**item, "answerOption": options}

    def initial_expression(self, item: dict[str, Any], scope: Scope,
                           exts: dict[str, list[dict[str, Any]]], meta: dict[str, Any],
                           body: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        """``initialExpression`` → ``item`` with the values it gives as ``initial`` (the
        field's ``default``, checked as an answer of its type by :meth:`initial`). One that
        reads the clock is evaluated now for that check, and carried as ``default_fhirpath``
        (marked on ``body`` here; :meth:`Importer.item` swaps it for the default)."""
        for name in ("sdc-questionnaire-initialExpression", "questionnaire-initialExpression"):
            found = exts.pop(name, [])
            if not found:
                continue
            at = f"{scope.path}.extension[{name}]"
            if item.get("initial") or any(o.get("initialSelected")
                                          for o in item.get("answerOption", []) or []):
                self.refuse(at, "an initialExpression beside initial values")
                return item, None
            result = self.population(name, found[0], scope, scope.path, answers=False)
            if result is None:
                return item, None
            if isinstance(result, dict):
                from careloop.engine.limits import LimitExceeded
                from careloop.forms.fhirpath import FhirPathError, run

                body["default_fhirpath"] = result
                empty = {"resourceType": "QuestionnaireResponse", "status": "in-progress",
                         "item": []}
                try:
                    result = run(result["expression"], scope.variables, empty, self.q)
                except (FhirPathError, LimitExceeded) as exc:
                    body.pop("default_fhirpath")
                    self.refuse(at, f"the expression fails: {exc}")
                    return item, None
            values = [_temporal(v, str(item.get("type"))) or _initial_of(v) for v in result]
            if any(v is None for v in values):
                body.pop("default_fhirpath", None)
                self.refuse(at, "the expression gives a value that is not an answer")
                return item, None
            kept = self.kept(found[0].get("valueExpression", {}), scope)
            if kept is not None and "default_fhirpath" not in body:
                meta["initial_expression"] = kept
            return {**item, "initial": values}, at
        return item, None


#: ``%name``, ``%`quoted```, ``%'quoted'``
_PERCENT = re.compile(r"%([A-Za-z_][A-Za-z0-9_-]*|`[^`]+`|'[^']+')")
_CLOCK = re.compile(r"\b(today|now|timeOfDay)\s*\(")
_RESPONSE = {"resource", "context", "rootResource"}
#: FHIRPath's and FHIR's constants (not a launch context)
_CONSTANTS = {"ucum", "sct", "loinc", "factory", "terminologies", "server"}


def _fhir_value(value: Any) -> tuple[str, Any] | None:
    """A FHIRPath result value as a FHIR ``value[x]`` (name, value), or ``None``."""
    from decimal import Decimal

    if isinstance(value, bool):
        return "valueBoolean", value
    if isinstance(value, int):
        return "valueInteger", value
    if isinstance(value, float | Decimal):
        return "valueDecimal", float(value)
    if isinstance(value, str):
        return "valueString", value
    if isinstance(value, Mapping):
        if "code" in value and ("system" in value or "display" in value or len(value) == 1):
            return "valueCoding", {k: value[k] for k in ("system", "code", "display")
                                   if k in value}
        if "value" in value and ("unit" in value or "code" in value):
            return "valueQuantity", dict(value)
        return None
    name = type(value).__name__
    text = str(value)
    if name == "FP_Time":
        return "valueTime", text
    if name == "FP_DateTime":
        return ("valueDate", text) if len(text) == 10 else ("valueDateTime", text)
    return None


#: FHIR item type (or Careloop field type) → the value[x] its text values are
_TEMPORAL = {"date": "valueDate", "dateTime": "valueDateTime", "datetime": "valueDateTime",
             "time": "valueTime"}


def _temporal(value: Any, kind: str) -> dict[str, Any] | None:
    """fhirpathpy gives ``today()``, ``now()``, ``timeOfDay()`` (and arithmetic on them) as
    plain text: on a date, date-time or time item such a text is that value[x]."""
    name = _TEMPORAL.get(kind)
    if name is None or not isinstance(value, str):
        return None
    pattern = {"valueDate": r"\d{4}-\d{2}-\d{2}",
               "valueDateTime": r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?"
                                r"(Z|[+-]\d{2}:\d{2})?",
               "valueTime": r"\d{2}:\d{2}(:\d{2}(\.\d+)?)?"}[name]
    if not re.fullmatch(pattern, value):
        return None
    if name == "valueTime":
        value = value.split(".")[0]
    return {name: value}


def _option_of(value: Any) -> dict[str, Any] | None:
    found = _fhir_value(value)
    if found is None or found[0] not in ("valueCoding", "valueString", "valueInteger",
                                         "valueDate", "valueTime"):
        return None
    return {found[0]: found[1]}


def _initial_of(value: Any) -> dict[str, Any] | None:
    found = _fhir_value(value)
    return None if found is None else {found[0]: found[1]}
