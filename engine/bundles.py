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
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise
from pathlib import Path as FsPath
from pathlib import PurePosixPath
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from careloop.engine import audit, store
from careloop.engine.check import CheckResult, Definition, check_documents
from careloop.engine.clock import now_utc
from careloop.engine.db import transaction
from careloop.engine.errors import CareloopError, DefinitionInvalid, NotFound, Problem
from careloop.engine.limits import LIMITS, LimitExceeded
from careloop.engine.models import (
    BundleConflictRow,
    BundleRow,
    DefinitionImportRow,
    DefinitionRow,
)
from careloop.engine.schema import check_manifest
from careloop.engine.sources import DEFINITION_SUFFIXES, Document, load_bytes, load_text

MANIFEST = "app.yaml"
NOT_DEFINITIONS = ("tests/", "docs/")


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


def _zip_limit(code: str, message: str, limit: str, file: str) -> LimitExceeded:
    return LimitExceeded(code, message, limit=limit, file=file, line=1, column=1,
                         hint="export the bundle again from Careloop, or zip the app folder "
                              "with an ordinary zip tool")


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, shown: str) -> bytes:
    """One member, read with a cap: a member whose header lies about its size, or that expands
    far more than text does, is refused before (or while) it is expanded."""
    cap = 4 * LIMITS.source_bytes  # bytes: UTF-8 takes up to 4 per character
    if info.file_size > 64 * 1024 and info.file_size > LIMITS.zip_ratio * max(
            info.compress_size, 1):
        raise _zip_limit("bundle.zip-ratio", f"the file expands {info.file_size:,} bytes from "
                         f"{info.compress_size:,} (more than {LIMITS.zip_ratio} times)",
                         "zip_ratio", shown)
    if info.file_size > cap:
        raise _zip_limit("source.too-large", f"the file is {info.file_size:,} bytes, more than "
                         f"{cap:,}", "source_bytes", shown)
    try:
        with archive.open(info) as member:
            data = member.read(info.file_size + 1)
            extra = member.read(1) if len(data) == info.file_size else b""
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError,
            RuntimeError) as exc:
        raise _zip_limit("bundle.zip-size-mismatch", f"the file cannot be read as its zip entry "
                         f"declares it ({exc})", "", shown) from None
    if len(data) != info.file_size or extra:
        raise _zip_limit("bundle.zip-size-mismatch", f"the zip entry declares {info.file_size:,} "
                         "bytes but holds a different amount", "", shown)
    return data


def _read_zip(path: FsPath) -> dict[str, bytes]:
    """The manifest and definitions of a zip, each refused (``LimitExceeded``) if the archive
    has too many entries, declares too much, expands too far or lies about a size."""
    files: dict[str, bytes] = {}
    total = 0
    root = display_root(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise BundleError(f"{path}: not a zip file ({exc})") from exc
    with archive:
        infos = [i for i in archive.infolist() if not i.is_dir()]
        if len(infos) > LIMITS.zip_entries:
            raise _zip_limit("bundle.zip-entries", f"the zip has {len(infos):,} files, more than "
                             f"{LIMITS.zip_entries:,}", "zip_entries", root)
        names = [i.filename for i in infos]
        prefix = _common_root(names)
        for info in infos:
            name = info.filename[len(prefix):]
            pure = PurePosixPath(name)
            if pure.is_absolute() or ".." in pure.parts or "\\" in name:
                raise BundleError(f"{path}: unsafe member name {info.filename!r}")
            total += info.file_size
            if total > LIMITS.zip_bytes:
                raise _zip_limit("bundle.zip-too-large", "the zip's files together are more "
                                 f"than {LIMITS.zip_bytes // 2**20} MiB uncompressed",
                                 "zip_bytes", root)
            if name == MANIFEST or _is_definition(name):
                files[name] = _read_member(archive, info, f"{root}!{name}")
    return files


def _common_root(names: list[str]) -> str:
    """``obstetrics/`` when every member sits in one folder holding ``app.yaml``."""
    if MANIFEST in names:
        return ""
    tops = {n.split("/", 1)[0] for n in names}
    if len(tops) == 1 and f"{next(iter(tops))}/{MANIFEST}" in names:
        return next(iter(tops)) + "/"
    return ""


def _read_folder(path: FsPath) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for file in sorted(path.rglob("*")):
        rel = file.relative_to(path).as_posix()
        if file.is_file() and (rel == MANIFEST or _is_definition(rel)):
            files[rel] = file.read_bytes()  # decoded by load_bytes: not UTF-8 is a problem
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
        manifest = load_bytes(files[MANIFEST], shown[MANIFEST])
        problems.extend(manifest.problems or check_manifest(manifest))
    documents = [load_bytes(data, shown[rel]) for rel, data in files.items() if rel != MANIFEST]
    relative = {shown[rel]: rel for rel in files}
    return LoadedBundle(source=root, manifest=manifest, documents=documents, relative=relative,
                        problems=problems)


@dataclass(slots=True)
class PlanItem:
    """One definition's fate in an import.

    ``status`` is ``added``, ``changed``, ``unchanged``, ``removed``, ``kept`` (published in the
    builder since the last import, and the bundle did not change it: the builder's version stays)
    or ``conflict`` (changed in the builder *and* in the bundle: not applied, recorded for an
    administrator). ``reason`` says why for ``kept`` and ``conflict``: ``edited`` (in the builder),
    ``created`` (in the builder, never imported) or ``removed`` (from the bundle).
    """

    kind: str
    key: str
    status: str
    version: int | None = None  # the version it will have (or has, for unchanged/removed/kept)
    diff: str | None = None
    reason: str | None = None
    pending: bool = False  # a record to write although the definition itself does not change

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.key}"


STATUSES = ("added", "changed", "unchanged", "removed", "kept", "conflict")


@dataclass(slots=True)
class ImportPlan:
    """What importing a bundle would do.

    Its JSON has the keys ``added``, ``changed``, ``unchanged``, ``removed`` and ``kept``
    (``kind/key`` lists) and ``conflicts`` (``ref``, ``live_version``, ``bundle``: ``changed`` or
    ``removed``).
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
    def conflicts(self) -> list[PlanItem]:
        return [i for i in self.items if i.status == "conflict"]

    @property
    def is_noop(self) -> bool:
        return not self.manifest_changed and all(
            i.status in ("unchanged", "kept", "conflict") and not i.pending for i in self.items)

    def to_json(self) -> dict[str, Any]:
        return {
            "app": self.app_id, "version": self.bundle_version, "applied": self.applied,
            "manifest_changed": self.manifest_changed,
            **{status: self.refs(status) for status in STATUSES[:-1]},
            "conflicts": [{"ref": i.ref, "live_version": i.version,
                           "bundle": "removed" if i.reason == "removed" else "changed"}
                          for i in self.conflicts],
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


def _open_conflict(session: Session, kind: str, key: str) -> BundleConflictRow | None:
    return session.scalars(select(BundleConflictRow).where(
        BundleConflictRow.kind == kind, BundleConflictRow.key == key,
        BundleConflictRow.resolved_at.is_(None)).limit(1)).first()


def _conflict_item(session: Session, item: PlanItem, bundle_hash: str | None) -> PlanItem:
    found = _open_conflict(session, item.kind, item.key)
    item.pending = found is None or found.content_hash != bundle_hash
    return item


def _plan_definition(session: Session, definition: Definition, app_id: str,
                     problems: list[Problem]) -> PlanItem:
    kind, key = definition.kind, definition.key
    row = store.latest(session, kind, key)
    if row is not None and row.app_id != app_id:
        problems.append(definition.doc.problem(
            "bundle.key-owned-by-other-app",
            f"{definition.ref} belongs to app '{row.app_id}'", ("key",),
            hint="rename the key, or remove it from the other app first"))
        return PlanItem(kind, key, "unchanged", row.version)
    if row is None:
        return PlanItem(kind, key, "added", 1)
    bundle_hash = definition.content_hash
    if row.retired_at is not None:  # removed from the bundle earlier, back now
        if row.content_hash == bundle_hash:
            return PlanItem(kind, key, "added", row.version)
        return PlanItem(kind, key, "added", row.version + 1,
                        _short_diff(row.source_text, definition.doc.text, definition.source_path))
    record = session.get(DefinitionImportRow, (kind, key))
    conflict = _open_conflict(session, kind, key)
    if row.content_hash == bundle_hash:  # the same on both sides: nothing to decide
        # (both made the same change: note it, so later builder edits are seen as such; one
        # created in the builder stays the builder's until the bundle brings another text)
        pending = ((record is not None and record.content_hash != bundle_hash)
                   or conflict is not None)
        return PlanItem(kind, key, "unchanged", row.version, pending=pending)
    diff = _short_diff(row.source_text, definition.doc.text, definition.source_path)
    if record is None:  # created in the builder, and the bundle now brings another text
        return _conflict_item(session, PlanItem(kind, key, "conflict", row.version, diff,
                                                "created"), bundle_hash)
    builder_changed = row.content_hash != record.content_hash
    bundle_changed = bundle_hash != record.content_hash
    if not builder_changed:
        return PlanItem(kind, key, "changed", row.version + 1, diff,
                        pending=conflict is not None)
    if not bundle_changed:
        return PlanItem(kind, key, "kept", row.version, reason="edited",
                        pending=conflict is not None)
    return _conflict_item(session, PlanItem(kind, key, "conflict", row.version, diff, "edited"),
                          bundle_hash)


def _plan_absent(session: Session, row: DefinitionRow) -> PlanItem:
    """A current definition of the app that the bundle no longer has."""
    record = session.get(DefinitionImportRow, (row.kind, row.key))
    if record is None:
        return PlanItem(row.kind, row.key, "kept", row.version, reason="created")
    if row.content_hash == record.content_hash:
        return PlanItem(row.kind, row.key, "removed", row.version)
    return _conflict_item(session, PlanItem(row.kind, row.key, "conflict", row.version,
                                            reason="removed"), None)


def plan_import(session: Session, bundle: LoadedBundle) -> tuple[ImportPlan, CheckResult]:
    """Check the bundle and compare it with what is stored; writes nothing.

    Each definition is compared three ways: the bundle's text, the version in force, and what
    the bundle brought last time (:class:`DefinitionImportRow`). Only what nobody changed since
    is replaced; what staff published in the builder is kept, or, when the bundle changed it
    too, a conflict.
    """
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
                items.append(_plan_absent(session, row))
    stored = session.get(BundleRow, app_id)
    manifest_changed = stored is None or stored.manifest_text != bundle.manifest.text
    plan = ImportPlan(app_id=app_id, bundle_version=str(manifest.get("version", "?")),
                      manifest_changed=manifest_changed, items=items, problems=problems)
    return plan, result


def _record_import(session: Session, app_id: str, kind: str, key: str, version: int,
                   content_hash: str, now: datetime) -> None:
    record = session.get(DefinitionImportRow, (kind, key))
    if record is None:
        record = DefinitionImportRow(kind=kind, key=key)
        session.add(record)
    record.app_id, record.version, record.content_hash = app_id, version, content_hash
    record.imported_at = now


def _close_conflict(session: Session, kind: str, key: str, how: str, actor: str,
                    now: datetime) -> None:
    conflict = _open_conflict(session, kind, key)
    if conflict is not None:
        conflict.resolved_at, conflict.resolved_by, conflict.resolution = now, actor, how


def _store_conflict(session: Session, plan: ImportPlan, item: PlanItem,
                    definition: Definition | None, now: datetime) -> None:
    conflict = _open_conflict(session, item.kind, item.key)
    if conflict is None:
        conflict = BundleConflictRow(app_id=plan.app_id, kind=item.kind, key=item.key)
        session.add(conflict)
    conflict.bundle_version, conflict.live_version = plan.bundle_version, item.version or 0
    conflict.detected_at, conflict.diff = now, item.diff
    if definition is None:
        conflict.content_hash = conflict.body = conflict.source_text = None
        conflict.source_path, conflict.title = None, {}
    else:
        conflict.content_hash, conflict.body = definition.content_hash, definition.body
        conflict.source_text, conflict.source_path = definition.doc.text, definition.source_path
        conflict.title = definition.title


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
        definition = result.definitions.get((item.kind, item.key))
        if item.status == "conflict":
            if item.pending:
                _store_conflict(session, plan, item, definition, now)
            continue
        if item.pending:  # the two sides agree (again): an open conflict is settled
            _close_conflict(session, item.kind, item.key, "agreed", actor, now)
        if item.status == "removed":
            stored = store.current(session, item.kind, item.key)
            if stored is not None:
                stored.retired_at = now
            continue
        if item.status == "kept" or definition is None:
            continue
        if item.status == "unchanged":
            if item.pending and item.version is not None:
                _record_import(session, plan.app_id, item.kind, item.key, item.version,
                               definition.content_hash, now)
            continue
        existing = store.latest(session, item.kind, item.key)
        if existing is not None and existing.content_hash == definition.content_hash:
            existing.retired_at = None  # re-added unchanged: the old version is in force again
        else:
            session.add(DefinitionRow(
                kind=item.kind, key=item.key, version=item.version, app_id=plan.app_id,
                content_hash=definition.content_hash, title=definition.title,
                body=definition.body, source_text=definition.doc.text,
                source_path=definition.source_path, created_at=now, created_by=actor))
        _record_import(session, plan.app_id, item.kind, item.key, item.version or 1,
                       definition.content_hash, now)
    audit.append(session, actor=actor, action="bundle.import", object_type="bundle",
                 object_id=plan.app_id, details={
                     "version": plan.bundle_version,
                     **{s: plan.refs(s) for s in ("added", "changed", "removed", "kept")},
                     "conflicts": plan.refs("conflict")})


class _DryRun(Exception):
    """Rolls back a dry run that applied bundles so that the next ones see them."""


def import_bundles(paths: Sequence[FsPath], *, dry_run: bool = False,
                   engine: Engine | None = None, actor: str = "cli") -> list[ImportPlan]:
    """Import several bundles in the order of their ``requires``, in **one transaction**.

    Raises :class:`DefinitionInvalid` (every problem; nothing is written) when a bundle is
    invalid, two bundles have one app id, or bundles require each other in a cycle. A dry run
    plans each bundle as if the ones it requires had been applied, then writes nothing.
    """
    loaded = [load_bundle(path) for path in paths]
    plans: list[ImportPlan] = []
    try:
        with transaction(engine) as session:
            ordered = order_bundles(loaded)
            for index, bundle in enumerate(ordered):
                plan, result = plan_import(session, bundle)
                if plan.problems:
                    raise DefinitionInvalid(plan.problems, f"bundle {bundle.source} is invalid")
                plans.append(plan)
                if plan.is_noop or (dry_run and index == len(ordered) - 1):
                    continue
                _apply(session, bundle, plan, result, actor)
                session.flush()
                plan.applied = not dry_run
            if dry_run:
                raise _DryRun
    except _DryRun:
        pass
    return plans


def import_bundle(path: FsPath, *, dry_run: bool = False, engine: Engine | None = None,
                  actor: str = "cli") -> ImportPlan:
    """Plan, and unless ``dry_run``, apply atomically. Raises :class:`DefinitionInvalid`
    (with every problem) when the bundle is invalid; nothing is written then."""
    return import_bundles([path], dry_run=dry_run, engine=engine, actor=actor)[0]


# --- conflicts: changed in the builder and in the bundle -----------------------------------------


def open_conflicts(session: Session, app_id: str | None = None) -> Sequence[BundleConflictRow]:
    """Conflicts waiting for an administrator, oldest first."""
    query = select(BundleConflictRow).where(BundleConflictRow.resolved_at.is_(None))
    if app_id is not None:
        query = query.where(BundleConflictRow.app_id == app_id)
    return session.scalars(query.order_by(BundleConflictRow.id)).all()


RESOLUTIONS = ("builder", "bundle")


def resolve_conflict(session: Session, conflict_id: int, keep: str, *,
                     actor: str, actor_role: str | None = None, ip: str | None = None,
                     request_id: str | None = None) -> DefinitionRow | None:
    """Settle a conflict (audited): ``keep="builder"`` leaves the live version in force and
    takes note that the bundle's text was seen, so the next import keeps it; ``keep="bundle"``
    makes the bundle's text a new version (or retires the definition the bundle removed).
    Nothing is deleted. Returns the version in force afterwards. Raises :class:`NotFound` for an
    unknown or settled conflict and :class:`DefinitionInvalid` when the bundle's text no longer
    checks against what is stored now."""
    conflict = session.get(BundleConflictRow, conflict_id)
    if conflict is None or conflict.resolved_at is not None or keep not in RESOLUTIONS:
        raise NotFound(f"no open conflict {conflict_id}")
    now = now_utc()
    kind, key = conflict.kind, conflict.key
    live = store.current(session, kind, key)
    if keep == "builder":
        if conflict.content_hash is None:
            # the bundle dropped it, the hospital keeps it: from now on it is the builder's own
            record = session.get(DefinitionImportRow, (kind, key))
            if record is not None:
                session.delete(record)
        elif live is not None:
            _record_import(session, conflict.app_id, kind, key, live.version,
                           conflict.content_hash, now)
    elif conflict.content_hash is None:
        if live is not None:
            live.retired_at = now
        live = None
    else:
        live = _take_bundle_version(session, conflict, actor, now)
    conflict.resolved_at, conflict.resolved_by, conflict.resolution = now, actor, keep
    audit.append(session, actor=actor, actor_role=actor_role, ip=ip, request_id=request_id,
                 action="bundle.resolve_conflict",
                 object_type=kind, object_id=key,
                 details={"app": conflict.app_id, "keep": keep,
                          "version": live.version if live is not None else None})
    return live


def _take_bundle_version(session: Session, conflict: BundleConflictRow, actor: str,
                         now: datetime) -> DefinitionRow:
    kind, key = conflict.kind, conflict.key
    text, source_path = conflict.source_text or "", conflict.source_path or ""
    doc = load_text(text, f"{conflict.app_id}/{source_path}")

    def stored(other_kind: str, other_key: str) -> dict[str, Any] | None:
        row = store.current(session, other_kind, other_key)
        return dict(row.body) if row is not None else None

    result = check_documents([doc], external=stored)
    definition = result.definitions.get((kind, key))
    if not result.ok or definition is None:
        raise DefinitionInvalid(result.errors, f"the bundle's {kind} '{key}' no longer checks")
    latest = store.latest(session, kind, key)
    row = DefinitionRow(kind=kind, key=key, version=(latest.version + 1) if latest else 1,
                        app_id=conflict.app_id, content_hash=definition.content_hash,
                        title=definition.title, body=definition.body, source_text=text,
                        source_path=source_path, created_at=now, created_by=actor)
    session.add(row)
    session.flush()
    _record_import(session, conflict.app_id, kind, key, row.version, definition.content_hash, now)
    return row


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


def _requires(bundle: LoadedBundle) -> list[str]:
    manifest = bundle.manifest.data if isinstance(bundle.manifest.data, dict) else {}
    return [r for r in manifest.get("requires") or [] if isinstance(r, str)]


def _requires_problem(bundle: LoadedBundle, code: str, message: str,
                      required: str | None = None) -> Problem:
    requires = _requires(bundle)
    if required is not None and required in requires:
        return bundle.manifest.problem(code, message, ("requires", requires.index(required)))
    return bundle.manifest.problem(code, message, ("id",) if bundle.app_id else ())


def order_bundles(bundles: Sequence[LoadedBundle]) -> list[LoadedBundle]:
    """Bundles sorted so that every app comes after the apps it requires (stable otherwise).

    A requirement that is not among ``bundles`` is left to the import (it may be stored
    already; if not, ``bundle.missing-requirement``). Two bundles of one app
    (``bundle.duplicate-app``) or a cycle (``bundle.requires-cycle``, naming every bundle in it)
    raise :class:`DefinitionInvalid`.
    """
    by_id: dict[str, LoadedBundle] = {}
    problems: list[Problem] = []
    for bundle in bundles:
        app_id = bundle.app_id
        if not isinstance(app_id, str):
            continue
        if app_id in by_id:
            problems.append(_requires_problem(
                bundle, "bundle.duplicate-app",
                f"app '{app_id}' is also in {by_id[app_id].source}: import one of them"))
        else:
            by_id[app_id] = bundle
    if problems:
        raise DefinitionInvalid(problems, "two bundles of one app")
    ordered: list[LoadedBundle] = []
    done: set[int] = set()
    path: list[LoadedBundle] = []

    def visit(bundle: LoadedBundle) -> None:
        if id(bundle) in done:
            return
        if any(b is bundle for b in path):
            start = next(i for i, b in enumerate(path) if b is bundle)
            cycle = [*path[start:], bundle]
            names = " → ".join(str(b.app_id) if PurePosixPath(b.source).name == b.app_id
                               else f"{b.app_id} ({b.source})" for b in cycle)
            raise DefinitionInvalid(
                [_requires_problem(b, "bundle.requires-cycle",
                                   f"apps require each other in a cycle: {names}",
                                   nxt.app_id) for b, nxt in pairwise(cycle)],
                f"bundles require each other in a cycle: {names}")
        path.append(bundle)
        for required in _requires(bundle):
            if required in by_id:
                visit(by_id[required])
        path.pop()
        done.add(id(bundle))
        ordered.append(bundle)

    for bundle in bundles:
        visit(bundle)
    return ordered


def requires_of(path: FsPath) -> tuple[str | None, list[str]]:
    """``(app id, required app ids)`` from a bundle's manifest, without checking it."""
    bundle = load_bundle(path)
    return bundle.app_id, _requires(bundle)


def order_by_requires(paths: list[FsPath]) -> list[FsPath]:
    """Bundle paths sorted so that every app comes after the apps it requires."""
    by_bundle = [(load_bundle(path), path) for path in paths]
    index = {id(bundle): path for bundle, path in by_bundle}
    return [index[id(bundle)] for bundle in order_bundles([b for b, _ in by_bundle])]


def list_bundles(paths: Iterable[FsPath]) -> list[FsPath]:
    """Bundles in the given paths: a zip, a folder that holds an ``app.yaml``, or every such
    folder and zip inside a folder of bundles; ordered by ``requires``."""
    found: list[FsPath] = []
    for path in paths:
        if path.is_file() or (path / MANIFEST).is_file():
            found.append(path)
        elif path.is_dir():
            found.extend(sorted(p.parent for p in path.glob(f"*/{MANIFEST}")))
            found.extend(sorted(path.glob("*.zip")))
    return order_by_requires(found)
