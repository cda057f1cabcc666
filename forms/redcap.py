"""REDCap data dictionary (CSV) → form definition.

Field types, validation types, choices (``1, Yes | 0, No``), branching logic (``[q1] = '1'``
→ ``answers.q1 == '1'``) and calc fields (``[a] + [b]`` → a calculated field) are translated;
whatever cannot be is returned as a note (and written into the output as a comment), never
silently dropped.

    >>> translate_logic("[smoker] = '1' and [age] > 40")
    "answers.smoker == '1' and answers.age > 40"
    >>> translate_logic("[symptoms(2)] = '1'")
    "'2' in answers.symptoms"
"""

from __future__ import annotations

import csv
import io
import re
from typing import Any

from careloop.engine.expressions import ExpressionError, compile_expression

COLUMNS = {
    "name": "Variable / Field Name", "form": "Form Name", "section": "Section Header",
    "type": "Field Type", "label": "Field Label",
    "choices": "Choices, Calculations, OR Slider Labels", "note": "Field Note",
    "validation": "Text Validation Type OR Show Slider Number", "min": "Text Validation Min",
    "max": "Text Validation Max", "branching": "Branching Logic (Show field only if...)",
    "required": "Required Field?",
}
VALIDATION = {"integer": "integer", "number": "decimal", "number_1dp": "decimal",
              "number_2dp": "decimal", "email": "email", "date_ymd": "date", "date_dmy": "date",
              "date_mdy": "date", "datetime_ymd": "datetime", "datetime_dmy": "datetime",
              "datetime_mdy": "datetime", "datetime_seconds_ymd": "datetime", "time": "time",
              "phone": "mobile"}
SIMPLE = {"notes": "long_text", "yesno": "yes_no", "truefalse": "yes_no",
          "descriptive": "display", "file": "file", "slider": "slider", "sql": "short_text"}


def translate_logic(logic: str) -> str:
    """REDCap branching/calc syntax → a Careloop expression (not checked here)."""
    text = re.sub(r"\[([a-z][a-z0-9_]*)\((\w+)\)\]\s*=\s*['\"]1['\"]",
                  lambda m: f"'{m.group(2)}' in answers.{m.group(1)}", logic)
    text = re.sub(r"\[([a-z][a-z0-9_]*)\((\w+)\)\]\s*=\s*['\"]0['\"]",
                  lambda m: f"'{m.group(2)}' not in answers.{m.group(1)}", text)
    text = re.sub(r"\[([a-z][a-z0-9_]*)\]", r"answers.\1", text)
    text = text.replace("<>", "!=")
    text = re.sub(r"(?<![<>!=])=(?!=)", "==", text)
    return re.sub(r"\s+", " ", text).strip()


def _choices(spec: str) -> list[dict[str, Any]]:
    out = []
    for part in spec.split("|"):
        code, _, label = part.strip().partition(",")
        if code.strip():
            out.append({"code": code.strip(), "label": {"en": label.strip() or code.strip()}})
    return out


def import_dictionary(text: str, key: str, title: str | None = None
                      ) -> tuple[dict[str, Any], list[str]]:
    """Translate a data dictionary; returns ``(form body, notes)``."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    fields: list[dict[str, Any]] = []
    notes: list[str] = []
    known: set[str] = set()
    for number, row in enumerate(reader, start=2):
        get = {k: (row.get(v) or "").strip() for k, v in COLUMNS.items()}
        name = get["name"]
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,63}", name):
            notes.append(f"line {number}: variable {name!r} is not a valid key; row skipped")
            continue
        if get["section"]:
            fields.append({"key": f"{name}_section", "type": "section",
                           "label": {"en": get["section"]}})
        field: dict[str, Any] = {"key": name, "label": {"en": get["label"] or name}}
        kind = get["type"]
        if kind == "text":
            field["type"] = VALIDATION.get(get["validation"], "short_text")
            if get["validation"] and get["validation"] not in VALIDATION:
                notes.append(f"line {number}: {name}: validation {get['validation']!r} "
                             "has no equivalent; kept as text")
            for bound in ("min", "max"):
                if get[bound] and field["type"] in ("integer", "decimal"):
                    field[bound] = float(get[bound]) if "." in get[bound] else int(get[bound])
        elif kind in ("radio", "dropdown", "checkbox"):
            field["type"] = "multiple_choice" if kind == "checkbox" else "single_choice"
            field["choices"] = _choices(get["choices"])
            if kind == "dropdown":
                field["display"] = "dropdown"
        elif kind == "calc":
            field["type"] = "calculated"
            expression = translate_logic(get["choices"])
            if _compiles(expression):
                field["calculate"] = expression
            else:
                notes.append(f"line {number}: {name}: calculation {get['choices']!r} could not "
                             "be translated; field kept as hidden")
                field["type"] = "hidden"
        elif kind in SIMPLE:
            field["type"] = SIMPLE[kind]
        else:
            notes.append(f"line {number}: {name}: field type {kind!r} has no equivalent; "
                         "kept as text")
            field["type"] = "short_text"
        if field["type"] == "display":
            field["markdown"] = field.pop("label")
        if get["required"].lower() == "y" and field["type"] not in ("display", "calculated"):
            field["required"] = True
        if get["branching"]:
            expression = translate_logic(get["branching"])
            refs = set(re.findall(r"answers\.([a-z0-9_]+)", expression))
            if _compiles(expression) and refs <= known:
                field["visible_if"] = expression
            else:
                notes.append(f"line {number}: {name}: branching logic {get['branching']!r} "
                             "could not be translated; the field is always shown")
        if get["note"] and field["type"] != "display":
            field["help"] = {"en": get["note"]}
        known.add(name)
        fields.append(field)
    form_title = title or key
    return {"kind": "form", "key": key, "title": {"zh-CN": form_title, "en": form_title},
            "default_locale": "en", "fields": fields}, notes


def _compiles(expression: str) -> bool:
    try:
        compile_expression(expression, ["answers"])
    except ExpressionError:
        return False
    return True
