"""The one error model: located, coded, collected.

A :class:`Problem` is what an author sees. Checkers *collect* problems into a list (jsonschema's
``iter_errors`` style) instead of raising at the first one; the list renders three ways — CLI text,
JSON for the API and builder, and HTML next to the field (the web layer).

Example::

    >>> p = Problem("form.unknown-field-type", "unknown type 'numbr'",
    ...             path=("fields", 1, "type"), file="f.yaml", line=8, column=5,
    ...             hint="did you mean 'number'?")
    >>> where, what = p.render().split(" — ")
    >>> where
    'f.yaml:8:5: form.unknown-field-type at $.fields[1].type'
    >>> what
    "unknown type 'numbr' (did you mean 'number'?)"
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

PathPart = str | int
Path = tuple[PathPart, ...]
Severity = Literal["error", "warning"]


def format_path(path: Sequence[PathPart]) -> str:
    """Render a JSON path the way authors read it.

    >>> format_path(("fields", 1, "type"))
    '$.fields[1].type'
    >>> format_path(("titles", "zh-CN"))
    "$.titles['zh-CN']"
    """
    out = "$"
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.isidentifier():
            out += f".{part}"
        else:
            out += f"[{part!r}]"
    return out


def did_you_mean(value: object, candidates: Iterable[str]) -> str | None:
    """A hint naming the closest candidate, or ``None``.

    >>> did_you_mean("numbr", ["number", "text"])
    "did you mean 'number'?"
    """
    if not isinstance(value, str):
        return None
    matches = difflib.get_close_matches(value, list(candidates), n=1, cutoff=0.6)
    return f"did you mean '{matches[0]}'?" if matches else None


@dataclass(frozen=True, slots=True)
class Problem:
    """One located problem in a definition (or an event, or a form post)."""

    code: str
    message: str
    path: Path = ()
    file: str | None = None
    line: int | None = None
    column: int | None = None
    hint: str | None = None
    severity: Severity = "error"

    @property
    def json_path(self) -> str:
        return format_path(self.path)

    def location(self) -> str:
        if self.file is None:
            return ""
        if self.line is None:
            return self.file
        return f"{self.file}:{self.line}:{self.column or 1}"

    def render(self) -> str:
        """One line of CLI text (see the module docstring)."""
        where = self.location()
        prefix = f"{where}: " if where else ""
        kind = "" if self.severity == "error" else "warning "
        text = f"{prefix}{kind}{self.code} at {self.json_path} — {self.message}"
        if self.hint:
            text += f" ({self.hint})"
        return text

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = self.json_path
        data["path_parts"] = list(self.path)
        return data


@dataclass(slots=True)
class Problems:
    """An ordered, growable list of problems; what every checker appends to."""

    items: list[Problem] = field(default_factory=list)

    def add(self, problem: Problem) -> None:
        self.items.append(problem)

    def extend(self, problems: Iterable[Problem]) -> None:
        self.items.extend(problems)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.items if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.items if p.severity == "warning"]

    def __bool__(self) -> bool:
        return bool(self.errors)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def sorted(self) -> list[Problem]:
        return sorted(
            self.items,
            key=lambda p: (p.file or "", p.line or 0, p.column or 0, p.code),
        )


def summary_line(problems: Sequence[Problem], files: int) -> str:
    """The CLI's closing count line.

    >>> summary_line([], 3)
    'ok: 3 files, 0 errors'
    """
    errors = sum(1 for p in problems if p.severity == "error")
    warnings = len(problems) - errors
    head = "ok" if errors == 0 else "invalid"
    noun = "file" if files == 1 else "files"
    text = f"{head}: {files} {noun}, {errors} error{'s' if errors != 1 else ''}"
    if warnings:
        text += f", {warnings} warning{'s' if warnings != 1 else ''}"
    return text


class CareloopError(Exception):
    """Base class of errors Careloop raises on purpose (never for internal bugs)."""


class DefinitionInvalid(CareloopError):
    """Raised when a definition or bundle is used (imported, compiled for the runtime) with errors.

    Carries the full, collected problem list; nothing has been written when it is raised.
    """

    def __init__(self, problems: Sequence[Problem], summary: str = "definition is invalid") -> None:
        self.problems = list(problems)
        super().__init__(f"{summary}: {len(self.problems)} problem(s)")


class NotFound(CareloopError):
    """Raised when a stored object (definition, bundle, version) does not exist."""
