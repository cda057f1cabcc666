"""Two-phase checking: structure (JSON Schema), then meaning (each kind's compiler).

    source text ──load──▶ Document ──schema──▶ Definition ──compile──▶ spec (frozen)

All problems of all files are collected in one pass. A definition whose structure is wrong is not
compiled (its compiler may rely on the schema), but every other definition still is, and a
reference to a definition that exists but is broken is not reported a second time as unknown.

    >>> from careloop.engine.sources import load_text
    >>> result = check_documents([load_text("kind: nope\\nkey: a\\n", "a.yaml")])
    >>> [p.code for p in result.problems]
    ['definition.unknown-kind']
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from careloop.engine.errors import Path, Problem, did_you_mean
from careloop.engine.expressions import Expression, ExpressionError, compile_expression
from careloop.engine.kinds import KindSpec
from careloop.engine.registry import loaded_registry
from careloop.engine.schema import schema_problems
from careloop.engine.sources import Document

DefKey = tuple[str, str]  # (kind, key)


def canonical_json(data: Any) -> str:
    """The one serialisation used for hashing and storage: sorted keys, no spaces, UTF-8 text."""
    return json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def content_hash(data: Any) -> str:
    """Hash of a definition's meaning (not its formatting or comments).

    >>> content_hash({"b": 1, "a": "x"}) == content_hash({"a": "x", "b": 1})
    True
    """
    return "sha256:" + hashlib.sha256(canonical_json(data).encode("utf-8")).hexdigest()


@dataclass(slots=True)
class Definition:
    """A structurally valid definition: its source document plus identity."""

    kind: str
    key: str
    doc: Document
    source_path: str

    @property
    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = self.doc.data
        return body

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.key}"

    @property
    def content_hash(self) -> str:
        return content_hash(self.body)

    @property
    def title(self) -> dict[str, str]:
        title: dict[str, str] = self.body.get("title", {})
        return title


ExternalLookup = Callable[[str, str], dict[str, Any] | None]


@dataclass(slots=True)
class CompileContext:
    """What a kind's compiler may see: the other definitions being checked, and problem output."""

    definitions: dict[DefKey, Definition]
    broken: set[DefKey]
    specs: dict[DefKey, Any] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    external: ExternalLookup | None = None
    # which definition is being compiled, and every reference a compiler resolved:
    # (referring definition, referenced definition) — the builder's "where is this used"
    current: DefKey | None = None
    uses: set[tuple[DefKey, DefKey]] = field(default_factory=set)

    def add(self, problem: Problem) -> None:
        self.problems.append(problem)

    def reference(self, kind: str, key: object, doc: Document, path: Path,
                  *, code: str | None = None) -> Definition | dict[str, Any] | None:
        """Resolve a reference to another definition; report ``<kind>.unknown`` if it is missing.

        Looks in the definitions being checked first, then (when given) in stored definitions.
        Returns ``None`` both when missing and when the target exists but is broken.
        """
        if not isinstance(key, str):
            return None
        if self.current is not None:
            self.uses.add((self.current, (kind, key)))
        found = self.definitions.get((kind, key))
        if found is not None:
            return found
        if (kind, key) in self.broken:
            return None
        if self.external is not None:
            stored = self.external(kind, key)
            if stored is not None:
                return stored
        names = [k for (kd, k) in self.definitions if kd == kind]
        self.add(doc.problem(code or f"ref.unknown-{kind}", f"no {kind} with key '{key}'", path,
                             hint=did_you_mean(key, names)))
        return None

    def expression(self, doc: Document, path: Path, text: object,
                   names: Collection[str] | None = None,
                   code_prefix: str = "") -> Expression | None:
        """Compile an expression found at ``path``; a failure becomes a located problem."""
        if not isinstance(text, str):
            return None
        try:
            return compile_expression(text, names)
        except ExpressionError as exc:
            self.add(doc.problem(code_prefix + exc.code, f"{exc.message} in expression {text!r}",
                                 path, hint=exc.hint, column=exc.column))
            return None

    def spec_of(self, kind: str, key: str) -> Any:
        """The compiled spec of another definition (compiled earlier, by kind order)."""
        return self.specs.get((kind, key))


@dataclass(slots=True)
class CheckResult:
    """Everything one check pass found."""

    documents: list[Document]
    definitions: dict[DefKey, Definition]
    specs: dict[DefKey, Any]
    problems: list[Problem]
    uses: set[tuple[DefKey, DefKey]] = field(default_factory=set)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors


def _kinds() -> dict[str, KindSpec]:
    return dict(loaded_registry().catalogue("kind").items())


def _structure(doc: Document,
               kinds: dict[str, KindSpec]) -> tuple[Definition | None, list[Problem]]:
    """Phase 1 for one document: it is a mapping with a known kind and matches the schema."""
    if not doc.ok:
        return None, list(doc.problems)
    data = doc.data
    if not isinstance(data, dict):
        return None, [doc.problem("definition.not-a-mapping",
                                  "a definition must be a mapping with 'kind' and 'key'", ())]
    kind = data.get("kind")
    if kind not in kinds:
        if "kind" not in data:
            return None, [doc.problem("definition.missing-kind", "missing required key 'kind'", (),
                                      hint="one of: " + ", ".join(sorted(kinds)))]
        return None, [doc.problem("definition.unknown-kind", f"unknown kind {kind!r}", ("kind",),
                                  hint=did_you_mean(kind, kinds))]
    problems = schema_problems(doc, kind)
    key = data.get("key")
    if problems or not isinstance(key, str):
        return None, problems
    return Definition(kind=kind, key=key, doc=doc, source_path=doc.file), []


def check_documents(docs: Iterable[Document], *, external: ExternalLookup | None = None,
                    source_paths: dict[str, str] | None = None) -> CheckResult:
    """Check a set of documents together (a bundle, or what ``careloop validate`` was given)."""
    kinds = _kinds()
    documents = list(docs)
    problems: list[Problem] = []
    definitions: dict[DefKey, Definition] = {}
    broken: set[DefKey] = set()
    for doc in documents:
        definition, found = _structure(doc, kinds)
        problems.extend(found)
        if definition is None:
            data = doc.data if isinstance(doc.data, dict) else {}
            if isinstance(data.get("kind"), str) and isinstance(data.get("key"), str):
                broken.add((data["kind"], data["key"]))
            continue
        if source_paths and doc.file in source_paths:
            definition.source_path = source_paths[doc.file]
        ident = (definition.kind, definition.key)
        if ident in definitions:
            first = definitions[ident].doc.file
            problems.append(doc.problem(
                "definition.duplicate-key",
                f"{definition.kind} key '{definition.key}' is already defined in {first}",
                ("key",)))
            continue
        definitions[ident] = definition
    ctx = CompileContext(definitions=definitions, broken=broken, external=external)
    for ident, definition in sorted(definitions.items(),
                                    key=lambda item: (kinds[item[0][0]].order, item[0])):
        before = len(ctx.problems)
        ctx.current = ident
        spec = kinds[definition.kind].compile(definition, ctx)
        if spec is not None and not any(p.severity == "error" for p in ctx.problems[before:]):
            ctx.specs[ident] = spec
    problems.extend(ctx.problems)
    return CheckResult(documents=documents, definitions=definitions, specs=ctx.specs,
                       uses=ctx.uses,
                       problems=sorted(problems, key=lambda p: (p.file or "", p.line or 0,
                                                                p.column or 0, p.code)))
