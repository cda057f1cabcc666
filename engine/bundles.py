"""App bundles: a folder or ``.zip`` with an ``app.yaml`` manifest and its definitions.

    obstetrics/
      app.yaml                    # id, name, version, description, format, default_locale
      forms/postpartum_42d.yaml
      flows/postpartum.yaml
      tests/…                     # the bundle's own test cases (not definitions)

Import is plan-then-apply: :func:`plan_import` says what would be added, changed (with a short
diff), unchanged and removed; :func:`import_bundle` applies that plan in **one transaction**. A
bundle with any invalid definition is refused whole and changes nothing.
"""

from __future__ import annotations

import difflib
import io
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from pathlib import PurePosixPath
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from careloop.engine import audit, store
from careloop.engine.check import CheckResult, Definition, check_documents
from careloop.engine.clock import now_utc
from careloop.engine.db import transaction
from careloop.engine.errors import CareloopError, DefinitionInvalid, NotFound, Problem
from careloop.engine.models import BundleRow, DefinitionRow
from careloop.engine.schema import check_manifest
from careloop.engine.sources import DEFINITION_SUFFIXES, Document, load_text

MANIFEST = "app.yaml"
NOT_DEFINITIONS = ("tests/", "docs/")
MAX_ZIP_FILES = 5000
MAX_ZIP_BYTES = 64 * 1024 * 1024


class BundleError(CareloopError):
    """Raised when a path is not a readable bundle at all (missing, not a folder or zip)."""


@dataclass(slots=True)
class LoadedBundle:
    """The files of a bundle, parsed, with the names authors see in errors."""

    source: str
    manifest: Document
    documents: list[Document]
    relative: dict[str, str]
    problems: list[Problem] = field(default_factory=list)

    @property
    def app_id(self) -> str | None:
        data = self.manifest.data
        return data.get("id") if isinstance(data, dict) else None


def _is_definition(rel: str) -> bool:
    return (rel.endswith(DEFINITION_SUFFIXES) and rel != MANIFEST
            and not rel.startswith(NOT_DEFINITIONS) and "/." not in "/" + rel)


def _read_zip(path: FsPath) -> dict[str, str]:
    files: dict[str, str] = {}
    total = 0
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise BundleError(f"{path}: not a zip file ({exc})") from exc
    with archive:
        infos = [i for i in archive.infolist() if not i.is_dir()]
        if len(infos) > MAX_ZIP_FILES:
            raise BundleError(f"{path}: more than {MAX_ZIP_FILES} files")
        names = [i.filename for i in infos]
        prefix = _common_root(names)
        for info in infos:
            name = info.filename[len(prefix):]
            pure = PurePosixPath(name)
            if pure.is_absolute() or ".." in pure.parts or "\\" in name:
                raise BundleError(f"{path}: unsafe member name {info.filename!r}")
            total += info.file_size
            if total > MAX_ZIP_BYTES:
                raise BundleError(f"{path}: more than {MAX_ZIP_BYTES // 2**20} MiB uncompressed")
            if name == MANIFEST or _is_definition(name):
                files[name] = archive.read(info).decode("utf-8", errors="replace")
    return files


def _common_root(names: list[str]) -> str:
    """``obstetrics/`` when every member sits in one folder holding ``app.yaml``."""
    if MANIFEST in names:
        return ""
    tops = {n.split("/", 1)[0] for n in names}
    if len(tops) == 1 and f"{next(iter(tops))}/{MANIFEST}" in names:
        return next(iter(tops)) + "/"
    return ""


def _read_folder(path: FsPath) -> dict[str, str]:
    files: dict[str, str] = {}
    for file in sorted(path.rglob("*")):
        rel = file.relative_to(path).as_posix()
        if file.is_file() and (rel == MANIFEST or _is_definition(rel)):
            files[rel] = file.read_text(encoding="utf-8", errors="replace")
    return files


def display_root(path: FsPath) -> str:
    try:
        return path.resolve().relative_to(FsPath.cwd().resolve()).as_posix()
    except ValueError:
        return str(path)


def load_bundle(path: FsPath) -> LoadedBundle:
    """Read a bundle folder or zip; raises :class:`BundleError` if it is neither."""
    if not path.exists():
        raise BundleError(f"{path}: no such file or folder")
    root = display_root(path)
    if path.is_dir():
        files, sep = _read_folder(path), "/"
    elif zipfile.is_zipfile(path):
        files, sep = _read_zip(path), "!"
    else:
        raise BundleError(f"{path}: a bundle is a folder or a .zip file")
    shown = {rel: f"{root}{sep}{rel}" for rel in files}
    problems: list[Problem] = []
    if MANIFEST not in files:
        manifest = Document(file=f"{root}{sep}{MANIFEST}", text="")
        problems.append(Problem("bundle.no-manifest", f"the bundle has no {MANIFEST}",
                                file=manifest.file, hint="add app.yaml with id, name, version, "
                                "format and default_locale"))
    else:
        manifest = load_text(files[MANIFEST], shown[MANIFEST])
        problems.extend(manifest.problems or check_manifest(manifest))
    documents = [load_text(text, shown[rel]) for rel, text in files.items() if rel != MANIFEST]
    relative = {shown[rel]: rel for rel in files}
    return LoadedBundle(source=root, manifest=manifest, documents=documents, relative=relative,
                        problems=problems)


@dataclass(slots=True)
class PlanItem:
    """One definition's fate in an import."""

    kind: str
    key: str
    status: str  # added | changed | unchanged | removed
    version: int | None = None  # the version it will have (or has, for unchanged/removed)
    diff: str | None = None

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.key}"


@dataclass(slots=True)
class ImportPlan:
    """What importing a bundle would do.

    Its JSON has the keys ``added``, ``changed``, ``unchanged``, ``removed`` (``kind/key`` lists).
    """

    app_id: str
    bundle_version: str
    manifest_changed: bool
    items: list[PlanItem]
    problems: list[Problem] = field(default_factory=list)
    applied: bool = False

    def refs(self, status: str) -> list[str]:
        return [i.ref for i in self.items if i.status == status]

    @property
    def is_noop(self) -> bool:
        return not self.manifest_changed and all(i.status == "unchanged" for i in self.items)

    def to_json(self) -> dict[str, Any]:
        return {
            "app": self.app_id, "version": self.bundle_version, "applied": self.applied,
            "manifest_changed": self.manifest_changed,
            **{status: self.refs(status) for status in ("added", "changed", "unchanged",
                                                        "removed")},
            "diffs": {i.ref: i.diff for i in self.items if i.diff},
            "errors": [p.to_json() for p in self.problems],
        }


def _short_diff(old: str, new: str, name: str, limit: int = 40) -> str:
    lines = list(difflib.unified_diff(old.splitlines(), new.splitlines(), f"{name} (stored)",
                                      f"{name} (bundle)", n=1, lineterm=""))
    if len(lines) > limit:
        lines = [*lines[:limit], f"… {len(lines) - limit} more diff lines"]
    return "\n".join(lines)


def _external_lookup(session: Session, app_id: str | None) -> Any:
    def lookup(kind: str, key: str) -> dict[str, Any] | None:
        row = store.current(session, kind, key)
        if row is None or row.app_id == app_id:
            return None
        return dict(row.body)
    return lookup


def _required_problems(bundle: LoadedBundle, available: set[str]) -> list[Problem]:
    manifest = bundle.manifest.data if isinstance(bundle.manifest.data, dict) else {}
    problems = []
    for i, required in enumerate(manifest.get("requires") or []):
        if required not in available:
            problems.append(bundle.manifest.problem(
                "bundle.missing-requirement", f"required app '{required}' is not available",
                ("requires", i), hint="import that app first"))
    return problems


def check_bundle(bundle: LoadedBundle, session: Session | None = None,
                 siblings: dict[str, LoadedBundle] | None = None) -> CheckResult:
    """Check every definition of the bundle together.

    References may also point at definitions of the apps it ``requires``: stored ones (with a
    session) or, when validating files, the sibling bundles given in ``siblings`` (by app id).
    """
    manifest = bundle.manifest.data if isinstance(bundle.manifest.data, dict) else {}
    required = [r for r in manifest.get("requires") or [] if isinstance(r, str)]
    lookups: list[Callable[[str, str], dict[str, Any] | None]] = []
    available: set[str] = set()
    if siblings:
        index: dict[tuple[str, str], dict[str, Any]] = {}
        for app_id in required:
            if app_id in siblings:
                available.add(app_id)
                for doc in siblings[app_id].documents:
                    data = doc.data
                    if isinstance(data, dict) and isinstance(data.get("kind"), str):
                        index[(data["kind"], str(data.get("key")))] = data
        def from_siblings(kind: str, key: str) -> dict[str, Any] | None:
            return index.get((kind, key))

        lookups.append(from_siblings)
    if session is not None:
        lookups.append(_external_lookup(session, bundle.app_id))
        available |= {r for r in required if session.get(BundleRow, r) is not None}

    def external(kind: str, key: str) -> dict[str, Any] | None:
        for lookup in lookups:
            found = lookup(kind, key)
            if found is not None:
                return dict(found)
        return None

    result = check_documents(bundle.documents, external=external if lookups else None,
                             source_paths=bundle.relative)
    result.problems[:0] = [*bundle.problems, *_required_problems(bundle, available)]
    return result


def _plan_definition(session: Session, definition: Definition, app_id: str,
                     problems: list[Problem]) -> PlanItem:
    row = store.latest(session, definition.kind, definition.key)
    if row is not None and row.app_id != app_id:
        problems.append(definition.doc.problem(
            "bundle.key-owned-by-other-app",
            f"{definition.ref} belongs to app '{row.app_id}'", ("key",),
            hint="rename the key, or remove it from the other app first"))
        return PlanItem(definition.kind, definition.key, "unchanged", row.version)
    if row is None:
        return PlanItem(definition.kind, definition.key, "added", 1)
    if row.content_hash == definition.content_hash:
        status = "added" if row.retired_at is not None else "unchanged"
        return PlanItem(definition.kind, definition.key, status, row.version)
    diff = _short_diff(row.source_text, definition.doc.text, definition.source_path)
    status = "added" if row.retired_at is not None else "changed"
    return PlanItem(definition.kind, definition.key, status, row.version + 1, diff)


def plan_import(session: Session, bundle: LoadedBundle) -> tuple[ImportPlan, CheckResult]:
    """Check the bundle and compare it with what is stored; writes nothing."""
    result = check_bundle(bundle, session)
    manifest = bundle.manifest.data if isinstance(bundle.manifest.data, dict) else {}
    app_id = str(manifest.get("id", "?"))
    problems = list(result.errors)
    items = [_plan_definition(session, d, app_id, problems)
             for _, d in sorted(result.definitions.items())] if result.ok else []
    present = {(i.kind, i.key) for i in items}
    if result.ok:
        for row in store.list_current(session, app_id=app_id):
            if (row.kind, row.key) not in present:
                items.append(PlanItem(row.kind, row.key, "removed", row.version))
    stored = session.get(BundleRow, app_id)
    manifest_changed = stored is None or stored.manifest_text != bundle.manifest.text
    plan = ImportPlan(app_id=app_id, bundle_version=str(manifest.get("version", "?")),
                      manifest_changed=manifest_changed, items=items, problems=problems)
    return plan, result


def _apply(session: Session, bundle: LoadedBundle, plan: ImportPlan, result: CheckResult,
           actor: str) -> None:
    manifest = bundle.manifest.data
    now = now_utc()
    row = session.get(BundleRow, plan.app_id)
    if row is None:
        row = BundleRow(id=plan.app_id, imported_at=now)
        session.add(row)
    row.name, row.version = manifest["name"], manifest["version"]
    row.description, row.format = manifest.get("description"), manifest["format"]
    row.default_locale, row.manifest = manifest["default_locale"], manifest
    row.manifest_text, row.updated_at = bundle.manifest.text, now
    session.flush()
    for item in plan.items:
        if item.status == "removed":
            stored = store.current(session, item.kind, item.key)
            if stored is not None:
                stored.retired_at = now
            continue
        if item.status == "unchanged":
            continue
        definition = result.definitions[(item.kind, item.key)]
        existing = store.latest(session, item.kind, item.key)
        if existing is not None and existing.content_hash == definition.content_hash:
            existing.retired_at = None  # re-added unchanged: the old version is in force again
            continue
        session.add(DefinitionRow(
            kind=item.kind, key=item.key, version=item.version, app_id=plan.app_id,
            content_hash=definition.content_hash, title=definition.title,
            body=definition.body, source_text=definition.doc.text,
            source_path=definition.source_path, created_at=now, created_by=actor))
    audit.append(session, actor=actor, action="bundle.import", object_type="bundle",
                 object_id=plan.app_id, details={
                     "version": plan.bundle_version,
                     **{s: plan.refs(s) for s in ("added", "changed", "removed")}})


def import_bundle(path: FsPath, *, dry_run: bool = False, engine: Engine | None = None,
                  actor: str = "cli") -> ImportPlan:
    """Plan, and unless ``dry_run``, apply atomically. Raises :class:`DefinitionInvalid`
    (with every problem) when the bundle is invalid; nothing is written then."""
    bundle = load_bundle(path)
    with transaction(engine) as session:
        plan, result = plan_import(session, bundle)
        if plan.problems:
            raise DefinitionInvalid(plan.problems, f"bundle {bundle.source} is invalid")
        if dry_run or plan.is_noop:
            return plan
        _apply(session, bundle, plan, result, actor)
        plan.applied = True
    return plan


def export_bundle(app_id: str, engine: Engine | None = None) -> bytes:
    """A zip of the app's manifest and current definitions, byte-for-byte as imported."""
    with transaction(engine) as session:
        row = session.get(BundleRow, app_id)
        if row is None:
            raise NotFound(f"no app '{app_id}'")
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(MANIFEST, row.manifest_text)
            for definition in store.list_current(session, app_id=app_id):
                archive.writestr(definition.source_path, definition.source_text)
    return buffer.getvalue()


def requires_of(path: FsPath) -> tuple[str | None, list[str]]:
    """``(app id, required app ids)`` from a bundle's manifest, without checking it."""
    manifest = load_bundle(path).manifest.data
    if not isinstance(manifest, dict):
        return None, []
    requires = manifest.get("requires") or []
    return manifest.get("id"), [r for r in requires if isinstance(r, str)]


def order_by_requires(paths: list[FsPath]) -> list[FsPath]:
    """Bundles sorted so that every app comes after the apps it requires (stable otherwise)."""
    info = {path: requires_of(path) for path in paths}
    by_id = {app_id: path for path, (app_id, _) in info.items() if app_id}
    ordered: list[FsPath] = []
    visiting: set[FsPath] = set()

    def visit(path: FsPath) -> None:
        if path in ordered or path in visiting:
            return  # a cycle is reported by the import itself (a required app is missing)
        visiting.add(path)
        for required in info[path][1]:
            if required in by_id:
                visit(by_id[required])
        visiting.discard(path)
        ordered.append(path)

    for path in paths:
        visit(path)
    return ordered


def list_bundles(paths: Iterable[FsPath]) -> list[FsPath]:
    """Bundles in the given folders: every folder that holds an ``app.yaml``, and zips."""
    found: list[FsPath] = []
    for path in paths:
        if path.is_file() or (path / MANIFEST).is_file():
            found.append(path)
        elif path.is_dir():
            found.extend(sorted(p.parent for p in path.glob(f"*/{MANIFEST}")))
            found.extend(sorted(path.glob("*.zip")))
    return order_by_requires(found)
