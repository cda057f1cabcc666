"""Reading YAML and JSON while keeping the file, line and column of every node.

PyYAML's composer gives each node a start mark; we build plain Python data from the node tree
ourselves so that we can (a) remember where every value *and every mapping key* stood, (b) refuse
duplicate keys instead of silently keeping the last one, and (c) resolve scalars the YAML 1.2 way:
``on``/``yes``/``no`` stay strings (rule sets have an ``on:`` key), and so does ``2026-01-01``.

    >>> doc = load_text("kind: form\\nkey: demo\\nfields:\\n  - key: a\\n", "f.yaml")
    >>> doc.data["fields"][0]["key"]
    'a'
    >>> doc.position(("fields", 0, "key"))
    (4, 10)
    >>> doc.key_position(("fields", 0, "key"))
    (4, 5)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

import yaml

from careloop.engine.errors import Path, Problem

YAML_SUFFIXES = (".yaml", ".yml")
JSON_SUFFIXES = (".json",)
DEFINITION_SUFFIXES = YAML_SUFFIXES + JSON_SUFFIXES


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core-schema booleans and no implicit timestamps."""


# Drop the YAML 1.1 resolvers for bool (yes/no/on/off) and timestamp, then re-add a strict bool.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in ("tag:yaml.org,2002:bool",
                                                              "tag:yaml.org,2002:timestamp")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


@dataclass(slots=True)
class Document:
    """Parsed data plus where each part of it came from.

    ``positions`` maps a JSON path to the (line, column) of the value; ``key_positions`` maps the
    same path to the (line, column) of the mapping key that introduced it. Both are 1-based.
    """

    file: str
    text: str
    data: Any = None
    positions: dict[Path, tuple[int, int]] = field(default_factory=dict)
    key_positions: dict[Path, tuple[int, int]] = field(default_factory=dict)
    quoted: dict[Path, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def position(self, path: Path) -> tuple[int, int]:
        """Position of the value at ``path``, or of its nearest ancestor that has one."""
        for n in range(len(path), -1, -1):
            found = self.positions.get(path[:n])
            if found is not None:
                return found
        return (1, 1)

    def key_position(self, path: Path) -> tuple[int, int]:
        """Position of the key that introduced ``path`` (falls back to the value's position)."""
        found = self.key_positions.get(path)
        return found if found is not None else self.position(path)

    def expression_position(self, path: Path, column: int | None) -> tuple[int, int]:
        """Where column ``column`` (1-based) of the string at ``path`` stands in the file.

        Exact for single-line plain and quoted scalars; block scalars fall back to the value start.
        """
        line, col = self.position(path)
        if column is None:
            return line, col
        offset = self.quoted.get(path, 0)
        return line, col + offset + column - 1

    def problem(self, code: str, message: str, path: Path, *, at_key: bool = False,
                hint: str | None = None, column: int | None = None,
                severity: str = "error") -> Problem:
        """Build a :class:`Problem` located at ``path`` in this document."""
        if column is not None:
            line, col = self.expression_position(path, column)
        elif at_key:
            line, col = self.key_position(path)
        else:
            line, col = self.position(path)
        return Problem(code, message, path=path, file=self.file, line=line, column=col,
                       hint=hint, severity=severity)  # type: ignore[arg-type]


class _Builder:
    """Turns a composed YAML node tree into plain data, recording positions and duplicates."""

    def __init__(self, doc: Document, loader: _Loader) -> None:
        self.doc = doc
        self.loader = loader

    def build(self, node: yaml.Node, path: Path) -> Any:
        self.doc.positions[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, yaml.ScalarNode):
            if node.style in ("'", '"'):
                self.doc.quoted[path] = 1
            return self.loader.construct_object(node, deep=True)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(child, (*path, i)) for i, child in enumerate(node.value)]
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        raise TypeError(f"unexpected YAML node {node!r}")  # a PyYAML bug, not an author error

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key_pos = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            if key_node.tag == "tag:yaml.org,2002:merge":
                self.doc.problems.append(Problem(
                    "source.merge-key", "YAML merge keys ('<<') are not supported in definitions",
                    path=path, file=self.doc.file, line=key_pos[0], column=key_pos[1],
                    hint="write the keys out in full"))
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self.doc.problems.append(Problem(
                    "source.complex-key", "mapping keys must be plain text", path=path,
                    file=self.doc.file, line=key_pos[0], column=key_pos[1]))
                continue
            key = str(self.loader.construct_object(key_node))
            child_path = (*path, key)
            if key in out:
                first = self.doc.key_positions[child_path]
                self.doc.problems.append(Problem(
                    "source.duplicate-key",
                    f"duplicate key '{key}' (first defined at line {first[0]}, column {first[1]})",
                    path=child_path, file=self.doc.file, line=key_pos[0], column=key_pos[1],
                    hint="remove or rename one of them"))
                continue
            self.doc.key_positions[child_path] = key_pos
            out[key] = self.build(value_node, child_path)
        return out


def _syntax_problem(doc: Document, exc: yaml.MarkedYAMLError) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark else 1
    column = mark.column + 1 if mark else 1
    what = exc.problem or "invalid syntax"
    context = ""
    if exc.context:
        started = exc.context_mark
        at = (f" started at line {started.line + 1}, column {started.column + 1}"
              if started is not None and started is not mark else "")
        context = f" ({exc.context}{at})"
    return Problem("source.syntax", f"YAML syntax error: {what}{context}", file=doc.file,
                   line=line, column=column)


def load_text(text: str, file: str, *, as_json: bool | None = None) -> Document:
    """Parse YAML or JSON text; problems (syntax, duplicate keys) are collected on the document."""
    doc = Document(file=file, text=text)
    if as_json is None:
        as_json = file.endswith(JSON_SUFFIXES)
    if as_json:
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            doc.problems.append(Problem("source.syntax", f"JSON syntax error: {exc.msg}",
                                        file=file, line=exc.lineno, column=exc.colno))
            return doc
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            doc.problems.append(Problem("source.empty", "the file is empty", file=file,
                                        line=1, column=1))
            return doc
        doc.data = _Builder(doc, loader).build(node, ())
    except yaml.MarkedYAMLError as exc:
        doc.problems.append(_syntax_problem(doc, exc))
        doc.data = None
    except yaml.YAMLError as exc:
        doc.problems.append(Problem("source.syntax", f"YAML error: {exc}", file=file,
                                    line=1, column=1))
        doc.data = None
    finally:
        loader.dispose()
    return doc


def encoding_problem(data: bytes, name: str) -> Problem | None:
    """``None`` for UTF-8 text, else a problem at the first byte that is not UTF-8: its offset
    and its line:col (counted in the characters before it), never a silent U+FFFD."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[:exc.start].decode("utf-8")
        line = before.count("\n") + 1
        column = len(before) - (before.rfind("\n") + 1) + 1
        return Problem("source.encoding",
                       f"file is not UTF-8: byte {exc.start} (0x{data[exc.start]:02x}) cannot be "
                       "read", file=name, line=line, column=column,
                       hint="save the file as UTF-8 (GBK and other encodings are not read)")
    return None


def load_bytes(data: bytes, name: str) -> Document:
    """A definition from raw bytes: UTF-8 or a located ``source.encoding`` problem."""
    problem = encoding_problem(data, name)
    if problem is not None:
        doc = Document(file=name, text="")
        doc.problems.append(problem)
        return doc
    return load_text(data.decode("utf-8"), name)


def load_file(path: FsPath, display: str | None = None) -> Document:
    """Read a definition file; undecodable bytes are a located problem, not a crash."""
    return load_bytes(path.read_bytes(), display or str(path))
