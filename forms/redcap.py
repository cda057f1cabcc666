"""REDCap data dictionary (CSV) → form definitions, one per instrument (``Form Name``).

Fidelity rule: a feature is carried with its REDCap meaning, or refused loudly. Every note is
located (the dictionary's line and column name). A *refused* note is written into the form as
``import.unresolved``; the form compiler turns each into an error, so the form saves as a draft
but does not publish (and ``form test`` does not report it valid) until someone resolves it.

Calc and branching logic are translated by :mod:`careloop.forms.redcap_logic` (choice codes as
numbers in arithmetic, ``[sex] = 0`` compared as REDCap compares codes, ``datediff`` …).

    >>> translate_logic("[smoker] = '1' and [age] > 40", {"age": "number"})
    "answers.smoker == '1' and answers.age > 40"
    >>> translate_logic("[symptoms(2)] = '1'", {"symptoms": "checkbox"})
    "'2' in answers.symptoms"
"""

from __future__ import annotations

import csv
import html
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

from careloop.engine.errors import did_you_mean
from careloop.engine.expressions import ExpressionError, compile_expression
from careloop.forms.redcap_logic import LogicRefused, translate

COLUMNS = {
    "name": "Variable / Field Name", "form": "Form Name", "section": "Section Header",
    "type": "Field Type", "label": "Field Label",
    "choices": "Choices, Calculations, OR Slider Labels", "note": "Field Note",
    "validation": "Text Validation Type OR Show Slider Number", "min": "Text Validation Min",
    "max": "Text Validation Max", "identifier": "Identifier?",
    "branching": "Branching Logic (Show field only if...)", "required": "Required Field?",
    "alignment": "Custom Alignment", "number": "Question Number (surveys only)",
    "matrix": "Matrix Group Name", "ranking": "Matrix Ranking?",
    "annotation": "Field Annotation",
}
#: The column names of REDCap's API metadata export, accepted as the same columns.
API_COLUMNS = {
    "field_name": "name", "form_name": "form", "section_header": "section",
    "field_type": "type", "field_label": "label",
    "select_choices_or_calculations": "choices", "field_note": "note",
    "text_validation_type_or_show_slider_number": "validation",
    "text_validation_min": "min", "text_validation_max": "max", "identifier": "identifier",
    "branching_logic": "branching", "required_field": "required",
    "custom_alignment": "alignment", "question_number": "number",
    "matrix_group_name": "matrix", "matrix_ranking": "ranking", "field_annotation": "annotation",
}
REQUIRED_COLUMNS = ("name", "form", "type", "label")

#: REDCap text validation → (Careloop field type, extra options, note or None).
VALIDATION: dict[str, tuple[str, dict[str, Any], str | None]] = {
    "integer": ("integer", {}, None),
    "number": ("decimal", {}, None),
    "number_1dp": ("decimal", {"step": 0.1}, None),
    "number_2dp": ("decimal", {"step": 0.01}, None),
    "email": ("email", {}, None),
    "date_ymd": ("date", {}, None), "date_dmy": ("date", {}, None),
    "date_mdy": ("date", {}, None),
    "datetime_ymd": ("datetime", {}, None), "datetime_dmy": ("datetime", {}, None),
    "datetime_mdy": ("datetime", {}, None), "datetime_seconds_ymd": ("datetime", {}, None),
    "datetime_seconds_dmy": ("datetime", {}, None),
    "datetime_seconds_mdy": ("datetime", {}, None),
    "time": ("time", {}, None),
    "phone": ("short_text", {"pattern": r"[+(]?[0-9][0-9 ()./-]{4,23}"},
              "REDCap checks North American numbers; imported as any phone number "
              "(digits, spaces, + ( ) - . /)"),
    "alpha_only": ("short_text", {"pattern": "[A-Za-z]+"}, None),
    "zipcode": ("short_text", {"pattern": r"[0-9]{5}(-[0-9]{4})?"}, None),
}
#: REDCap field type → what it becomes (the docs table is checked against these tables).
FIELD_TYPES: dict[str, tuple[str, str]] = {
    "text": ("translated", "short_text, or the type of its validation"),
    "notes": ("translated", "long_text"),
    "radio": ("translated", "single_choice"),
    "dropdown": ("translated", "single_choice, display: dropdown"),
    "checkbox": ("translated", "multiple_choice"),
    "yesno": ("translated", "single_choice 1 Yes / 0 No (REDCap's codes)"),
    "truefalse": ("translated", "single_choice 1 True / 0 False (REDCap's codes)"),
    "descriptive": ("translated", "display (HTML → markdown)"),
    "file": ("translated", "file"),
    "slider": ("translated", "slider, min/max from the validation columns (default 0–100), "
                             "left/right labels; a middle label goes into the help text"),
    "calc": ("translated", "calculated, logic translated; refused when not exact"),
    "sql": ("refused", "a database query has no equivalent"),
}
#: Action tags (Field Annotation) → status and meaning.
ACTION_TAGS: dict[str, tuple[str, str]] = {
    "@CHARLIMIT": ("translated", "max_length"),
    "@HIDDEN": ("translated", "on a calc: a form score (computed, stored, not shown) when no "
                              "field logic reads it; on any other field refused (Careloop has "
                              "no hidden answerable field)"),
    "@HIDDEN-SURVEY": ("translated", "as @HIDDEN"),
    "@HIDDEN-FORM": ("translated", "as @HIDDEN"),
    "@HIDDEN-APP": ("translated", "as @HIDDEN"),
    "@READONLY": ("refused", "no read-only field option"),
    "@READONLY-SURVEY": ("refused", "no read-only field option"),
    "@DEFAULT": ("refused", "field defaults are not applied by the form runtime"),
    "@TODAY": ("refused", "field defaults are not applied by the form runtime"),
    "@NOW": ("refused", "field defaults are not applied by the form runtime"),
    "@SETVALUE": ("refused", "field defaults are not applied by the form runtime"),
    "@CALCTEXT": ("refused", "text calculations are not translated"),
    "@CALCDATE": ("refused", "date calculations are not translated"),
    "@NONEOFTHEABOVE": ("translated", "the choice becomes exclusive"),
}
#: Identifier? = y: carried as ``identifier: true`` (masked on staff pages and exports unless
#: revealed, the reveal audited).
IDENTIFIER_NOTE = ("marked as an identifier (personal data): carried as identifier: true, "
                   "shown masked to staff unless revealed")
#: REDCap's range check only warns on a data entry form; Careloop's min/max refuse.
RANGE_NOTE = ("REDCap's range check only warns on a data entry form (a value outside it can be "
              "saved); Careloop refuses an answer outside min–max")
_KEY = re.compile(r"[a-z][a-z0-9_]{0,63}")
_TAG = re.compile(r"@[A-Z][A-Z0-9_-]*")
PHONE_HELP = "phone"


@dataclass(frozen=True, slots=True)
class ImportNote:
    """One located note: ``refused`` notes block publishing, the others inform."""

    line: int
    column: str
    field: str
    message: str
    refused: bool = True

    def __str__(self) -> str:
        kind = "refused" if self.refused else "translated"
        return f"line {self.line}, {self.column}: {self.field}: {kind}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        return {"line": self.line, "column": self.column, "field": self.field,
                "message": self.message}


@dataclass
class Instrument:
    """One instrument of a dictionary, as a form body and its notes."""

    key: str
    body: dict[str, Any]
    notes: list[ImportNote] = field(default_factory=list)

    @property
    def refused(self) -> list[ImportNote]:
        return [n for n in self.notes if n.refused]


class DictionaryInvalid(ValueError):
    """The CSV is not a REDCap data dictionary (header); ``problems`` are located sentences."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


# --- header -----------------------------------------------------------------------------------

def read_header(text: str) -> tuple[list[str], dict[str, str]]:
    """Check the header line; returns the rows' column names and ``{our name: column}``."""
    body = text.lstrip("\ufeff")
    first = body.split("\n", 1)[0].rstrip("\r")
    names = next(csv.reader([first]), [])
    problems: list[str] = []
    by_title = {title: name for name, title in COLUMNS.items()}
    mapping: dict[str, str] = {}
    if len(names) <= 1 and any(d in first for d in (";", "\t", "|")):
        delimiter = next(d for d in (";", "\t", "|") if d in first)
        raise DictionaryInvalid([f"line 1, column 1: the header is separated by "
                                 f"{delimiter!r}, expected ',' (save the dictionary as CSV "
                                 "with commas)"])
    for index, name in enumerate(names, start=1):
        clean = name.strip()
        ours = by_title.get(clean) or API_COLUMNS.get(clean)
        if ours is None:
            hint = did_you_mean(clean, [*COLUMNS.values(), *API_COLUMNS])
            problems.append(f"line 1, column {index}: unknown column {clean!r}"
                            + (f" ({hint})" if hint else ""))
            continue
        if ours in mapping:
            problems.append(f"line 1, column {index}: column {clean!r} appears twice")
        mapping[ours] = name
    for ours in REQUIRED_COLUMNS:
        if ours not in mapping:
            problems.append(f"line 1: missing required column {COLUMNS[ours]!r}; expected "
                            f"{', '.join(repr(COLUMNS[c]) for c in REQUIRED_COLUMNS)}")
    if problems:
        raise DictionaryInvalid(problems)
    return names, mapping


# --- text -------------------------------------------------------------------------------------

class _Text(HTMLParser):
    """HTML → text: tags dropped, line breaks kept, ``<b>``/``<i>`` as markdown if asked."""

    BREAKS = frozenset({"br", "p", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6"})

    def __init__(self, markdown: bool) -> None:
        super().__init__(convert_charrefs=True)
        self.markdown = markdown
        self.out: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self.skip += 1
        elif (tag in self.BREAKS and tag != "br" and self.out) or tag == "br":
            self.out.append("\n")
        elif self.markdown and tag in ("b", "strong"):
            self.out.append("**")
        elif self.markdown and tag in ("i", "em"):
            self.out.append("*")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self.skip = max(0, self.skip - 1)
        elif tag in self.BREAKS and tag != "br":
            self.out.append("\n")
        elif self.markdown and tag in ("b", "strong"):
            self.out.append("**")
        elif self.markdown and tag in ("i", "em"):
            self.out.append("*")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.out.append(data)


def plain_text(text: str, markdown: bool = False) -> str:
    """A REDCap label as text: HTML tags removed safely, line breaks kept.

    >>> plain_text("<b>Over the last 2 weeks</b>,<br>how often…")
    'Over the last 2 weeks,\\nhow often…'
    >>> plain_text("<b>Note</b> &amp; more", markdown=True)
    '**Note** & more'
    """
    if "<" not in text and "&" not in text:
        return text.strip()
    parser = _Text(markdown)
    parser.feed(text)
    parser.close()
    joined = html.unescape("".join(parser.out))
    lines = [re.sub(r"[ \t]+", " ", line).strip() for line in joined.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _pipes(text: str, known: set[str]) -> str:
    """REDCap piping ``[field]`` → ``{{ field }}`` for fields of this instrument."""
    return re.sub(r"\[([a-z][a-z0-9_]*)\]",
                  lambda m: "{{ " + m.group(1) + " }}" if m.group(1) in known else m.group(0),
                  text)


# --- rows -------------------------------------------------------------------------------------

def _choices(spec: str) -> list[dict[str, Any]]:
    out = []
    for part in spec.split("|"):
        code, _, label = part.strip().partition(",")
        if code.strip():
            text = plain_text(label.strip()) or code.strip()
            out.append({"code": code.strip(), "label": {"en": text}})
    return out


def _kind(row_type: str, validation: str) -> str:
    if row_type in ("radio", "dropdown", "yesno", "truefalse"):
        return "choice"
    if row_type == "checkbox":
        return "checkbox"
    if row_type in ("calc", "slider"):
        return "number"
    if row_type == "text":
        target = VALIDATION.get(validation, ("short_text", {}, None))[0]
        if target in ("integer", "decimal"):
            return "number"
        if target in ("date", "datetime"):
            return "date"
    return "text"


def _number(text: str) -> int | float | None:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return None


class _Importer:
    def __init__(self, text: str) -> None:
        self.names, self.mapping = read_header(text)
        self.rows = list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))[1:]
        self.instruments: dict[str, Instrument] = {}
        self.kinds: dict[str, dict[str, str]] = {}

    def cell(self, row: list[str], ours: str) -> str:
        column = self.mapping.get(ours)
        if column is None:
            return ""
        index = self.names.index(column)
        return row[index].strip() if index < len(row) else ""

    def run(self, prefix: str | None) -> list[Instrument]:
        rows: list[tuple[int, dict[str, str]]] = []
        for number, row in enumerate(self.rows, start=2):
            if not any(c.strip() for c in row):
                continue
            rows.append((number, {ours: self.cell(row, ours) for ours in COLUMNS}))
        for _line, get in rows:  # every field's kind first: logic may name later fields
            form = get["form"] or "form"
            hidden = get["type"] == "calc" and any(
                t.startswith("@HIDDEN") for t in _TAG.findall(get["annotation"]))
            self.kinds.setdefault(form, {})[get["name"]] = (
                "score" if hidden else _kind(get["type"], get["validation"]))
        record_id = rows[0][1]["name"] if rows else None
        for number, get in rows:
            form = get["form"] or "form"
            instrument = self.instruments.get(form)
            if instrument is None:
                key = _form_key(form, prefix)
                title = plain_text(form.replace("_", " ")).capitalize()
                instrument = self.instruments[form] = Instrument(key, {
                    "kind": "form", "key": key, "title": {"zh-CN": title, "en": title},
                    "default_locale": "en", "fields": []})
            if get["name"] == record_id:
                instrument.notes.append(ImportNote(
                    number, COLUMNS["name"], get["name"],
                    "the record ID is Careloop's own submission id; not asked as a question",
                    refused=False))
                continue
            self.row(instrument, number, get)
        out = list(self.instruments.values())
        for instrument in out:
            unresolved = [n.to_json() for n in instrument.refused]
            instrument.body["import"] = {"source": "redcap", "unresolved": unresolved}
            if not instrument.body["fields"]:
                instrument.body["fields"].append({"key": "note", "type": "display",
                                                  "markdown": {"en": instrument.body["title"]
                                                               ["en"]}})
        return out

    def row(self, instrument: Instrument, number: int, get: dict[str, str]) -> None:
        name = get["name"]
        fields: list[dict[str, Any]] = instrument.body["fields"]
        notes = instrument.notes
        kinds = self.kinds[get["form"] or "form"]

        def note(column: str, message: str, refused: bool = True) -> None:
            notes.append(ImportNote(number, COLUMNS[column], name, message, refused))

        if not _KEY.fullmatch(name):
            note("name", f"variable {name!r} is not a valid key (a–z, 0–9, _); row skipped")
            return
        known = set(kinds)
        if get["section"]:
            fields.append({"key": f"{name}_section", "type": "section",
                           "label": {"en": _pipes(plain_text(get["section"]), known)}})
        label = get["label"]
        if "<" in label or "&" in label:
            note("label", "HTML removed from the label (line breaks kept)", refused=False)
        field: dict[str, Any] = {"key": name,
                                 "label": {"en": _pipes(plain_text(label), known) or name}}
        kind = get["type"]
        if kind == "text":
            target, extra, message = VALIDATION.get(get["validation"], ("short_text", {}, None))
            field["type"] = target
            field.update(extra)
            if message:
                note("validation", message, refused=False)
            if get["validation"] and get["validation"] not in VALIDATION:
                note("validation", f"validation {get['validation']!r} has no equivalent; the "
                     "answer would not be checked")
            for bound in ("min", "max"):
                if get[bound]:
                    value = _number(get[bound])
                    if target in ("integer", "decimal") and value is not None:
                        field[bound] = value
                    elif target == "date" and re.fullmatch(r"\d{4}-\d{2}-\d{2}", get[bound]):
                        field[bound] = get[bound]
                    else:
                        note(bound, f"{bound} {get[bound]!r} is not carried for a "
                             f"{target} field")
            if "min" in field or "max" in field:
                note("min" if "min" in field else "max", RANGE_NOTE, refused=False)
        elif kind in ("radio", "dropdown", "checkbox"):
            field["type"] = "multiple_choice" if kind == "checkbox" else "single_choice"
            field["choices"] = _choices(get["choices"])
            if not field["choices"]:
                note("choices", "no choices given")
                field["choices"] = [{"code": "1", "label": {"en": "?"}}]
            if kind == "dropdown":
                field["display"] = "dropdown"
        elif kind in ("yesno", "truefalse"):
            yes, no = ("Yes", "No") if kind == "yesno" else ("True", "False")
            field["type"] = "single_choice"
            field["choices"] = [{"code": "1", "label": {"en": yes}},
                                {"code": "0", "label": {"en": no}}]
        elif kind == "calc" and kinds.get(name) == "score":
            self.hidden_calc(instrument, number, get, kinds, note)
            return
        elif kind == "calc":
            field["type"] = "calculated"
            try:
                expression = translate(get["choices"], kinds, calc=True)
                _check(expression)
                field["calculate"] = expression
            except (LogicRefused, ExpressionError) as exc:
                note("choices", f"calculation {get['choices']!r} not translated: "
                     f"{_reason(exc)}")
                field["calculate"] = "None"
        elif kind == "slider":
            self.slider(field, get, note)
        elif kind == "descriptive":
            field["type"] = "display"
            del field["label"]
            field["markdown"] = {"en": _pipes(plain_text(label, markdown=True), known)
                                 or name}
        elif kind == "notes":
            field["type"] = "long_text"
        elif kind == "file":
            field["type"] = "file"
            if get["validation"] == "signature":
                field["type"] = "signature"
        else:
            note("type", f"field type {kind!r} has no equivalent")
            field["type"] = "short_text"
        if get["required"].lower() == "y" and field["type"] not in ("display", "calculated"):
            field["required"] = True
        if get["identifier"].lower() == "y" and field["type"] != "display":
            field["identifier"] = True
            note("identifier", IDENTIFIER_NOTE, refused=False)
        if get["ranking"].lower() == "y":
            note("ranking", "matrix ranking (one answer per column) is not carried")
        if get["branching"]:
            try:
                expression = translate(get["branching"], kinds)
                _check(expression)
                field["visible_if"] = expression
            except (LogicRefused, ExpressionError) as exc:
                note("branching", f"branching logic {get['branching']!r} not translated: "
                     f"{_reason(exc)}; the field would always be shown")
        if get["note"] and field["type"] != "display":
            field["help"] = {"en": _pipes(plain_text(get["note"]), known)}
        self.action_tags(field, get["annotation"], note)
        fields.append(field)

    def hidden_calc(self, instrument: Instrument, number: int, get: dict[str, str],
                    kinds: Mapping[str, str], note: Any) -> None:
        """A @HIDDEN calc is a form score: computed and stored with the submission, not shown."""
        score: dict[str, Any] = {"key": get["name"], "method": "expression",
                                 "label": {"en": plain_text(get["label"]) or get["name"]}}
        try:
            expression = translate(get["choices"], kinds, calc=True, scores=True)
            compile_expression(expression, ["answers", "scores"])
            score["expression"] = expression
        except (LogicRefused, ExpressionError) as exc:
            note("choices", f"calculation {get['choices']!r} not translated: {_reason(exc)}")
            score["expression"] = "None"
        for tag in _TAG.findall(get["annotation"]):
            if not tag.startswith("@HIDDEN"):
                meaning = ACTION_TAGS.get(tag, ("", "not carried"))[1]
                note("annotation", f"action tag {tag}: {meaning}")
        if get["branching"]:
            note("branching", "branching logic on a hidden calculation is not carried")
        instrument.body.setdefault("scores", []).append(score)

    def slider(self, field: dict[str, Any], get: dict[str, str], note: Any) -> None:
        field["type"] = "slider"
        low, high = _number(get["min"]) if get["min"] else 0, (
            _number(get["max"]) if get["max"] else 100)
        if low is None or high is None:
            note("min", "slider range is not a number")
            low, high = 0, 100
        field["min"], field["max"] = low, high
        labels = [plain_text(p.strip()) for p in get["choices"].split("|")] if get[
            "choices"] else []
        if len(labels) == 3:
            left, middle, right = labels
        elif len(labels) in (1, 2):
            left, middle, right = labels[0], "", labels[-1] if len(labels) == 2 else ""
        else:
            left = middle = right = ""
        if left:
            field["min_label"] = {"en": left}
        if right:
            field["max_label"] = {"en": right}
        if middle:
            field["help"] = {"en": f"{left} … {middle} … {right}"}
            note("choices", "the slider's middle label is shown in the help text",
                 refused=False)

    def action_tags(self, field: dict[str, Any], annotation: str, note: Any) -> None:
        for match in _TAG.finditer(annotation):
            tag = match.group()
            rest = annotation[match.end():]
            status = ACTION_TAGS.get(tag)
            if status is None:
                note("annotation", f"action tag {tag} is not carried")
            elif tag == "@CHARLIMIT":
                limit = re.match(r"\s*=\s*['\"]?(\d+)", rest)
                if limit and field["type"] in ("short_text", "long_text"):
                    field["max_length"] = int(limit.group(1))
                else:
                    note("annotation", "@CHARLIMIT needs a number on a text field")
            elif tag == "@NONEOFTHEABOVE":
                code = re.match(r"\s*=\s*['\"]?([A-Za-z0-9_-]+)", rest)
                chosen = [c for c in field.get("choices", [])
                          if code and c["code"] == code.group(1)]
                if chosen and field["type"] == "multiple_choice":
                    chosen[0]["exclusive"] = True
                else:
                    note("annotation", "@NONEOFTHEABOVE needs a choice code of a checkbox")
            elif tag.startswith("@HIDDEN"):
                note("annotation", f"action tag {tag} on a {field['type']} field: Careloop "
                     "shows every field it asks")
            else:
                note("annotation", f"action tag {tag}: {status[1]}")


def _reason(exc: Exception) -> str:
    return exc.message if isinstance(exc, ExpressionError) else str(exc)


def _check(expression: str) -> None:
    compile_expression(expression, ["answers"])


def _form_key(form: str, prefix: str | None) -> str:
    base = re.sub(r"[^a-z0-9_]+", "_", form.lower()).strip("_") or "form"
    if not base[0].isalpha():
        base = f"f_{base}"
    key = f"{prefix}_{base}" if prefix else base
    return key[:64]


# --- entry points -----------------------------------------------------------------------------

def import_instruments(text: str, prefix: str | None = None) -> list[Instrument]:
    """Every instrument of a data dictionary as its own form (key from ``Form Name``).

    Raises :class:`DictionaryInvalid` when the header is not a REDCap dictionary's.
    """
    return _Importer(text).run(prefix)


def import_dictionary(text: str, key: str, title: str | None = None
                      ) -> tuple[dict[str, Any], list[str]]:
    """A single-instrument dictionary as ``(form body, notes)``; several instruments are
    refused here (use :func:`import_instruments`)."""
    instruments = import_instruments(text)
    if len(instruments) != 1:
        raise DictionaryInvalid([f"the dictionary holds {len(instruments)} instruments "
                                 f"({', '.join(i.key for i in instruments)}); import them as "
                                 "one form each"])
    body = instruments[0].body
    body["key"] = key
    form_title = title or body["title"]["en"]
    body["title"] = {"zh-CN": form_title, "en": form_title}
    return body, [str(n) for n in instruments[0].notes]


def translate_logic(logic: str, kinds: Mapping[str, str] | None = None) -> str:
    """REDCap branching logic → a Careloop condition; unknown fields are taken as choices."""
    names = set(re.findall(r"\[([a-z][a-z0-9_]*)", logic))
    return translate(logic, {**{n: "choice" for n in names}, **(kinds or {})})
