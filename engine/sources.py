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
from careloop.engine.limits import LIMITS, LimitExceeded

YAML_SUFFIXES = (".yaml", ".yml")
JSON_SUFFIXES = (".json",)
DEFINITION_SUFFIXES = YAML_SUFFIXES + JSON_SUFFIXES


# more opening brackets on one line, none closed, than the depth limit allows (``[[[[…``,
# ``[1, [1, [1, …``): found at C speed, before PyYAML's scanner looks ahead through the line
_OPENING_RUN = re.compile(r"[\[{](?:[^\[\]{}\n]*[\[{]){" + str(LIMITS.source_depth) + "}")


class _LimitHit(Exception):
    """A source limit reached while composing (becomes a located ``Problem``)."""

    def __init__(self, code: str, message: str, mark: yaml.Mark | None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.mark = mark


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core-schema booleans and no implicit timestamps, that counts
    aliases and nesting depth while it composes (so a deep or alias-bombed text stops early,
    before any of it is expanded)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.depth = 0
        self.aliases = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > LIMITS.source_aliases:
                raise _LimitHit("source.too-many-aliases",
                                f"more than {LIMITS.source_aliases} YAML aliases (*name)",
                                self.peek_event().start_mark)  # type: ignore[no-untyped-call]
            return super().compose_node(parent, index)
        self.depth += 1
        try:
            if self.depth > LIMITS.source_depth:
                raise _LimitHit("source.too-deep",
                                f"nested deeper than {LIMITS.source_depth} levels",
                                self.peek_event().start_mark)  # type: ignore[no-untyped-call]
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


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


def _expanded_size(root: yaml.Node) -> tuple[int, yaml.Node | None]:
    """How many values the node graph holds once its aliases are expanded (counted without
    expanding: each distinct node once), and a node that contains itself, if any.

    Stops counting past ``LIMITS.source_nodes``."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    cap = LIMITS.source_nodes + 1
    # iterative post-order walk: (node, children visited?)
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        ident = id(node)
        if isinstance(node, yaml.ScalarNode):
            sizes[ident] = 1
            continue
        children: list[yaml.Node] = (list(node.value) if isinstance(node, yaml.SequenceNode)
                                     else [n for pair in node.value for n in pair])
        if done:
            on_path.discard(ident)
            sizes[ident] = min(cap, 1 + sum(sizes[id(c)] for c in children))
            continue
        if ident in sizes:
            continue
        if ident in on_path:
            return cap, node
        on_path.add(ident)
        stack.append((node, True))
        for child in children:
            if id(child) in on_path:
                return cap, child
            if id(child) not in sizes:
                stack.append((child, False))
    return sizes[id(root)], None


def _limit_problem(doc: Document, hit: _LimitHit) -> Problem:
    line = hit.mark.line + 1 if hit.mark is not None else 1
    column = hit.mark.column + 1 if hit.mark is not None else 1
    limit = {"source.too-deep": "source_depth", "source.too-many-aliases": "source_aliases",
             "source.too-many-nodes": "source_nodes", "source.too-large": "source_bytes"}
    return Problem(hit.code, f"{hit.message} (limit: {LIMITS.describe(limit[hit.code])})",
                   file=doc.file, line=line, column=column,
                   hint="write the definition out smaller; definitions this size are refused so "
                        "that one file cannot hold up the server")


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
    if len(text) > LIMITS.source_bytes:
        doc.problems.append(_limit_problem(doc, _LimitHit(
            "source.too-large", f"the text is {len(text)} characters long, more than "
            f"{LIMITS.source_bytes}", None)))
        return doc
    run = _OPENING_RUN.search(text)
    if run is not None:  # the YAML scanner would look far ahead in such a run: refuse it first
        line = text.count("\n", 0, run.start()) + 1
        column = run.start() - (text.rfind("\n", 0, run.start()) + 1) + 1
        doc.problems.append(_limit_problem(doc, _LimitHit(
            "source.too-deep", f"nested deeper than {LIMITS.source_depth} levels",
            yaml.Mark(file, run.start(), line - 1, column - 1, None, 0))))
        return doc
    if as_json is None:
        as_json = file.endswith(JSON_SUFFIXES)
    if as_json:
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            doc.problems.append(Problem("source.syntax", f"JSON syntax error: {exc.msg}",
                                        file=file, line=exc.lineno, column=exc.colno))
            return doc
        except RecursionError:
            doc.problems.append(_limit_problem(doc, _LimitHit(
                "source.too-deep", f"nested deeper than {LIMITS.source_depth} levels", None)))
            return doc
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            doc.problems.append(Problem("source.empty", "the file is empty", file=file,
                                        line=1, column=1))
            return doc
        size, looped = _expanded_size(node)
        if looped is not None:
            raise _LimitHit("source.too-deep", "a YAML alias refers to a value that contains it "
                            f"(nested deeper than {LIMITS.source_depth} levels)",
                            looped.start_mark)
        if size > LIMITS.source_nodes:
            raise _LimitHit("source.too-many-nodes", f"more than {LIMITS.source_nodes} values "
                            "once YAML aliases are expanded", node.start_mark)
        doc.data = _Builder(doc, loader).build(node, ())
    except _LimitHit as hit:
        doc.problems.append(_limit_problem(doc, hit))
        doc.data = None
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


def locate_limit(exc: LimitExceeded, doc: Document) -> LimitExceeded:
    """``exc`` (raised at run time with a path into a definition) placed at file, line and
    column of ``doc``; a list item named by its ``key`` (``("rules", "crisis", …)``, as a
    runtime knows it) becomes its index."""
    path = list(exc.problem.path)
    for i in range(len(path) - 1):
        items = doc.data
        for part in path[:i + 1]:
            if isinstance(items, dict):
                items = items.get(part)
            elif isinstance(items, list) and isinstance(part, int) and 0 <= part < len(items):
                items = items[part]
            else:
                items = None
        if isinstance(items, list) and isinstance(path[i + 1], str):
            keys = [item.get("key") if isinstance(item, dict) else None for item in items]
            if path[i + 1] in keys:
                path[i + 1] = keys.index(path[i + 1])
    line, column = doc.position(tuple(path))
    return exc.locate(file=doc.file, line=line, column=column, path=tuple(path))
