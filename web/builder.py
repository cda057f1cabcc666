"""The visual builder's logic: drafts, live validation, diff and impact, publish, "try it".

The builder edits one definition at a time as a JSON body (the form builder's model) or as
YAML/JSON text (the text view); both become YAML text here, so every problem has a line and column
in the text view and a path (``$.fields[2].visible_if``) for the field card. Validation is the
same checker as ``careloop validate``: :func:`careloop.engine.check.check_documents`, with stored
definitions (the app's siblings and the apps it requires) resolving references.

Publishing writes a new immutable :class:`~careloop.engine.models.DefinitionRow` version in the
same app, exactly as a bundle import would, and appends an audit row in the same transaction.
"""

from __future__ import annotations

import copy
import difflib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import yaml
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from careloop.engine import audit, store
from careloop.engine.check import CheckResult, check_documents, content_hash
from careloop.engine.clock import now_utc
from careloop.engine.errors import CareloopError, Problem
from careloop.engine.limits import LIMIT_CODES, LimitExceeded
from careloop.engine.models import BundleRow, DefinitionRow
from careloop.engine.registry import loaded_registry
from careloop.engine.scope import manifest_departments
from careloop.engine.services import FIELD_KEYS, service
from careloop.engine.sources import load_text, locate_limit
from careloop.web import governance
from careloop.web.builder_labels import label_enums
from careloop.web.builder_models import BuilderDraft, PublishRequest
from careloop.web.permissions import BUILDER_EDIT, Principal, permissions_of

MAX_TEXT = 512 * 1024
PUBLISH = "builder.publish"  # the audit action (listed in docs/builder.md)


class BuilderError(CareloopError):
    """A builder request refused, with an i18n key (``builder.…``) and parameters."""

    def __init__(self, key: str, status: int = 400, **params: object) -> None:
        super().__init__(key)
        self.key, self.status, self.params = key, status, params


def to_yaml(body: Any) -> str:
    """A definition body as block YAML, keys in the author's order, Chinese kept readable."""
    text: str = yaml.safe_dump(body, allow_unicode=True, sort_keys=False, width=100,
                               default_flow_style=False)
    return text


def folder_of(kind: str) -> str:
    spec = loaded_registry().catalogue("kind").get(kind)
    if spec is None:
        raise BuilderError("builder.unknown_kind", 404, kind=kind)
    return str(spec.folder)


def source_path(kind: str, key: str, text: str) -> str:
    suffix = ".json" if text.lstrip().startswith("{") else ".yaml"
    return f"{folder_of(kind)}/{key}{suffix}"


def text_of(payload: dict[str, Any]) -> str:
    """The draft's text from a request: ``{"text": "..."}`` or ``{"body": {...}}``."""
    if isinstance(payload.get("body"), dict):
        return to_yaml(payload["body"])
    text = payload.get("text")
    if not isinstance(text, str):
        raise BuilderError("builder.no_text")
    if len(text) > MAX_TEXT:
        raise BuilderError("builder.too_large")
    return text


@dataclass(slots=True)
class Checked:
    """One draft checked: its problems (located in ``text``), and the body when it parsed."""

    text: str
    file: str
    body: dict[str, Any] | None
    result: CheckResult
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "body": self.body, "yaml": self.text, "file": self.file,
                "problems": [p.to_json() for p in self.problems]}


def _stored_lookup(session: Session) -> Any:
    def lookup(kind: str, key: str) -> dict[str, Any] | None:
        row = store.current(session, kind, key)
        return dict(row.body) if row is not None else None
    return lookup


def check_draft(session: Session, kind: str, key: str, text: str,
                app_id: str | None = None) -> Checked:
    """Check a draft with the same checker as ``careloop validate``; stored definitions (its
    siblings in the app and the apps it requires) resolve its references."""
    path = source_path(kind, key, text)
    doc = load_text(text, path)
    siblings = []
    if app_id is not None:
        # the app's other definitions are checked with the draft, so a change that breaks one of
        # them (a rule on a removed field) is reported too, under the sibling's file name
        siblings = [load_text(row.source_text, f"{app_id}/{row.source_path}")
                    for row in store.list_current(session, app_id=app_id)
                    if (row.kind, row.key) != (kind, key)]
    result = check_documents([doc, *siblings], external=_stored_lookup(session))
    problems = list(result.problems)
    body = doc.data if isinstance(doc.data, dict) else None
    if body is not None:
        if body.get("kind") != kind:
            problems.append(doc.problem("builder.kind-changed",
                                        f"this editor edits a {kind}, not {body.get('kind')!r}",
                                        ("kind",)))
        if body.get("key") != key:
            problems.append(doc.problem("builder.key-changed",
                                        f"the key must stay '{key}'", ("key",),
                                        hint="create a new definition to use another key"))
    return Checked(text=text, file=path, body=body, result=result, problems=problems)


# --- drafts ---------------------------------------------------------------------------------


def get_draft(session: Session, user_id: int, kind: str, key: str) -> BuilderDraft | None:
    return session.scalars(select(BuilderDraft).where(
        BuilderDraft.user_id == user_id, BuilderDraft.kind == kind,
        BuilderDraft.key == key)).first()


def save_draft(session: Session, user_id: int, app_id: str, kind: str, key: str,
               text: str, editor: Principal | None = None) -> BuilderDraft:
    """Store (or replace) the user's draft of ``kind/key`` (refused when ``editor`` may not
    edit ``app_id``, or when the key already belongs to another app)."""
    folder_of(kind)
    require_editor(session, editor, app_id)
    latest = store.latest(session, kind, key)
    if latest is not None and latest.app_id not in (None, app_id):
        raise BuilderError("builder.other_app", 409, app=str(latest.app_id))
    row = get_draft(session, user_id, kind, key)
    current = store.current(session, kind, key)
    if row is None:
        try:
            with session.begin_nested():
                row = BuilderDraft(user_id=user_id, kind=kind, key=key, app_id=app_id,
                                   text=text, base_version=current.version if current else None,
                                   updated_at=now_utc())
                session.add(row)
            return row
        except IntegrityError:
            # two autosaves of one editor at once: the other inserted first; this one
            # replaces its text like any later save
            row = get_draft(session, user_id, kind, key)
            if row is None:
                raise
    row.text, row.app_id, row.updated_at = text, app_id, now_utc()
    session.flush()
    return row


def discard_draft(session: Session, user_id: int, kind: str, key: str) -> None:
    session.execute(delete(BuilderDraft).where(
        BuilderDraft.user_id == user_id, BuilderDraft.kind == kind, BuilderDraft.key == key))


def require_app(session: Session, app_id: str) -> BundleRow:
    row = session.get(BundleRow, app_id)
    if row is None:
        raise BuilderError("builder.unknown_app", 404, app=app_id)
    return row


# --- who may edit which app -------------------------------------------------------------------


def may_edit(editor: Principal, app: BundleRow) -> bool:
    """Whether ``editor`` may change ``app``'s definitions: one of their grants carries
    ``builder.edit`` and matches an entry of the manifest's ``editors`` (same role; an entry
    naming a department needs a grant in that department, or a hospital-wide one). An app
    without ``editors`` is edited by hospital-wide ``builder.edit`` grants only.

    The app's reach bounds it (:mod:`careloop.engine.scope`): a hospital-wide app (``scope:
    hospital``, or no ``departments``) is edited by hospital-wide grants only; a department
    app by hospital-wide grants and grants in one of its ``departments``."""
    reach = manifest_departments(app.manifest)
    grants = [g for g in editor.grants if BUILDER_EDIT in permissions_of(g.role)
              and (g.department_id is None or (reach is not None and g.department_id in reach))]
    entries = (app.manifest or {}).get("editors")
    if not entries:
        return any(g.department_id is None for g in grants)
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        for grant in grants:
            if grant.role != entry.get("role"):
                continue
            department = entry.get("department")
            if department is None or grant.department_id in (None, department):
                return True
    return False


def require_editor(session: Session, editor: Principal | None, app_id: str) -> BundleRow:
    """The app, when ``editor`` may change it (``None``: a trusted caller such as the CLI)."""
    row = require_app(session, app_id)
    if editor is not None and not may_edit(editor, row):
        raise BuilderError("builder.not_editor", 403, app=app_id)
    return row


def require_owner(session: Session, editor: Principal | None, kind: str, key: str,
                  body: dict[str, Any]) -> None:
    """Refuse a department's editor publishing a definition another department owns.

    A kind whose definitions belong to a department registers ``fn(body) -> department | None``
    in ``registry.catalogue("definition_owner")`` (an education item: its ``department``); an
    editor without a hospital-wide ``builder.edit`` grant may publish only what both the draft
    and the current version say is their department's (refused with the translation key
    ``<kind>.not-your-department``, which the kind's package provides)."""
    owner_of = loaded_registry().catalogue("definition_owner").get(kind)
    if editor is None or owner_of is None:
        return
    grants = [g.department_id for g in editor.grants if BUILDER_EDIT in permissions_of(g.role)]
    if None in grants:
        return
    current = store.current(session, kind, key)
    owners = {owner_of(body)} | ({owner_of(current.body)} if current is not None else set())
    for owner in owners:
        if owner is not None and owner not in grants:
            raise BuilderError(f"{kind}.not-your-department", 403)


def editable_apps(session: Session, editor: Principal) -> list[str]:
    return [row.id for row in session.scalars(select(BundleRow).order_by(BundleRow.id))
            if may_edit(editor, row)]


def starting_text(session: Session, user_id: int, kind: str, key: str) -> tuple[str, str | None]:
    """What the editor opens with: the user's draft, else the current version, else a blank
    definition. Returns ``(text, app_id)``."""
    draft = get_draft(session, user_id, kind, key)
    if draft is not None:
        return draft.text, draft.app_id
    row = store.current(session, kind, key)
    if row is not None:
        return row.source_text, row.app_id
    return to_yaml(blank(kind, key)), None


def blank(kind: str, key: str) -> dict[str, Any]:
    body: dict[str, Any] = {"kind": kind, "key": key,
                            "title": {"zh-CN": key, "en": key}}
    if kind == "form":
        body.update(default_locale="zh-CN", fields=[])
    if kind == "dashboard":
        body.update(tiles=[])
    if kind == "decision_table":
        body.update(hit_policy="unique", inputs=[], outputs=[], rows=[])
    if kind == "chart":
        body.update(dataset="", type="bar", encoding={})
    if kind == "dataset":
        body.update(source="submissions", dimensions=[], measures=[])
    if kind == "flow":
        body.update(trigger={"event": "encounter.discharged"}, steps=[])
    if kind == "alert":
        body.update(dataset="", measure="", group_by="department",
                    condition={"op": "<", "value": 0}, window_days=14, severity="warning")
    return body


# --- diff, impact, publish --------------------------------------------------------------------


def diff(session: Session, kind: str, key: str, text: str) -> str:
    row = store.current(session, kind, key)
    old = row.source_text if row is not None else ""
    name = f"{kind}/{key}"
    return "\n".join(difflib.unified_diff(
        old.splitlines(), text.splitlines(),
        f"{name} v{row.version}" if row else f"{name} (new)", f"{name} (draft)", lineterm=""))


def _fields(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every field of a form by its answer key (``group.sub`` inside a group)."""
    fields: dict[str, dict[str, Any]] = {}

    def walk(items: Any, prefix: str) -> None:
        for item in items if isinstance(items, list) else []:
            if isinstance(item, dict) and isinstance(item.get("key"), str):
                fields[prefix + item["key"]] = item
                walk(item.get("fields"), prefix + item["key"] + ".")
    walk(body.get("fields"), "")
    return fields


def _field_types(body: dict[str, Any]) -> dict[str, str]:
    return {key: str(item.get("type")) for key, item in _fields(body).items()}


def _label(field: dict[str, Any] | None, key: str) -> dict[str, str]:
    """A field's label (``{"zh-CN", "en"}``); a field without one is named by its key."""
    label = (field or {}).get("label")
    if isinstance(label, dict) and label and all(isinstance(v, str) for v in label.values()):
        return {str(k): v for k, v in label.items()}
    return {"zh-CN": key, "en": key}


def _type_title(name: str) -> dict[str, str]:
    spec = loaded_registry().catalogue("field_type").get(name)
    return dict(spec.title) if spec is not None and spec.title else {"zh-CN": name, "en": name}


def impact(session: Session, kind: str, key: str, body: dict[str, Any] | None) -> dict[str, Any]:
    """What publishing would affect: stored answers a form change orphans (field removed or
    retyped; each named by its ``label`` — from the current version for a removed field — and a
    retyped one by its old and new type titles, ``from_title``/``to_title``; the key stays
    ``field``), and flow runs that stay on their version."""
    out: dict[str, Any] = {"orphaned": [], "retyped": [], "running_flows": 0, "submissions": 0}
    row = store.current(session, kind, key)
    if row is None or body is None:
        return out
    if kind == "form":
        from careloop.forms.models import SubmissionAnswer

        field_keys = service(loaded_registry(), FIELD_KEYS)
        keep = field_keys(body)
        used = dict(session.execute(
            select(SubmissionAnswer.field_key, func.count(SubmissionAnswer.id))
            .where(SubmissionAnswer.form_key == key)
            .group_by(SubmissionAnswer.field_key)).all())
        old_fields, new_fields = _fields(dict(row.body)), _fields(body)
        old_types, new_types = _field_types(dict(row.body)), _field_types(body)
        out["orphaned"] = sorted(({"field": k, "answers": n, "label": _label(old_fields.get(k), k)}
                                  for k, n in used.items() if k not in keep),
                                 key=lambda d: str(d["field"]))
        out["retyped"] = sorted(({"field": k, "answers": n, "from": old_types[k],
                                  "to": new_types[k], "label": _label(new_fields.get(k), k),
                                  "from_title": _type_title(old_types[k]),
                                  "to_title": _type_title(new_types[k])}
                                 for k, n in used.items() if k in old_types and k in new_types
                                 and old_types[k] != new_types[k]),
                                key=lambda d: str(d["field"]))
        out["submissions"] = sum(used.values())
    if kind == "flow":
        from careloop.flows.models import FlowRun

        out["running_flows"] = session.scalar(select(func.count(FlowRun.id)).where(
            FlowRun.flow_key == key,
            FlowRun.status.notin_(("completed", "cancelled", "failed")))) or 0
    return out


def publish(session: Session, *, actor: str, actor_role: str | None, app_id: str, kind: str,
            key: str, text: str, confirm_orphans: bool = False,
            user_id: int | None = None, request_id: str | None = None,
            ip: str | None = None, editor: Principal | None = None,
            approved_by: str | None = None) -> DefinitionRow | PublishRequest:
    """Publish a draft as a new version of ``kind/key`` in ``app_id`` (audited); raises
    :class:`BuilderError` when it is invalid, unchanged, owned by another app, or would orphan
    stored answers without ``confirm_orphans``, or when ``editor`` may not edit ``app_id``.

    A draft that sends data out or acts hospital-wide (:func:`governance.reasons`) is not
    published: a :class:`PublishRequest` awaiting a second person's approval is returned, and
    the definition lands when it is approved (``approved_by``: the approver, then)."""
    require_editor(session, editor, app_id)
    checked = check_draft(session, kind, key, text, app_id)
    if not checked.ok or checked.body is None:
        raise BuilderError("builder.invalid", 422, n=len(checked.problems))
    require_owner(session, editor, kind, key, checked.body)
    latest = store.latest(session, kind, key)
    if latest is not None and latest.app_id != app_id:
        raise BuilderError("builder.other_app", 409, app=str(latest.app_id))
    current = store.current(session, kind, key)
    digest = content_hash(checked.body)
    if current is not None and current.content_hash == digest:
        raise BuilderError("builder.unchanged", 409)
    effect = impact(session, kind, key, checked.body)
    if (effect["orphaned"] or effect["retyped"]) and not confirm_orphans:
        raise BuilderError("builder.orphans", 409, n=len(effect["orphaned"])
                           + len(effect["retyped"]))
    if approved_by is None:
        why = governance.reasons(session, app_id, kind, key, checked.body)
        if why:
            return governance.request_approval(
                session, app_id=app_id, kind=kind, key=key, text=text, digest=digest,
                base_version=current.version if current is not None else None, why=why,
                confirm_orphans=confirm_orphans, actor=actor, actor_role=actor_role,
                user_id=user_id, request_id=request_id, ip=ip)
    title = checked.body.get("title") if isinstance(checked.body.get("title"), dict) else {}
    row = DefinitionRow(kind=kind, key=key, version=(latest.version + 1) if latest else 1,
                        app_id=app_id, content_hash=digest, title=title, body=checked.body,
                        source_text=text, source_path=source_path(kind, key, text),
                        created_at=now_utc(), created_by=actor)
    session.add(row)
    session.flush()
    audit.append(session, actor=actor, actor_role=actor_role, ip=ip, request_id=request_id,
                 action=PUBLISH, object_type=kind, object_id=key,
                 details={"app": app_id, "version": row.version, "content_hash": digest,
                          "orphaned": [o["field"] for o in effect["orphaned"]],
                          "retyped": [o["field"] for o in effect["retyped"]],
                          **({"approved_by": approved_by} if approved_by else {})})
    if user_id is not None:
        discard_draft(session, user_id, kind, key)
    return row


def refuse_over_limits(checked: Checked) -> Checked:
    """Raise :class:`LimitExceeded` if the draft's text is beyond a source limit (too large,
    too deep, too many aliases or values): the API answers 422 and nothing is stored."""
    for problem in checked.problems:
        if problem.code in LIMIT_CODES and problem.code.startswith("source."):
            raise LimitExceeded.from_problem(problem)
    return checked


def refuse_text_over_limits(kind: str, key: str, text: str) -> None:
    """:func:`refuse_over_limits` for a text not checked yet (parses it only, cheaply)."""
    for problem in load_text(text, source_path(kind, key, text)).problems:
        if problem.code in LIMIT_CODES and problem.code.startswith("source."):
            raise LimitExceeded.from_problem(problem)


def valid_spec(session: Session, kind: str, key: str, text: str) -> Any:
    """The compiled spec of a draft without problems (for "try it"), else ``builder.invalid``."""
    checked = check_draft(session, kind, key, text)
    spec = checked.result.specs.get((kind, key))
    if not checked.ok or spec is None:
        raise BuilderError("builder.invalid", 422, n=len(checked.problems))
    return spec


# --- rules: try a draft rule set ------------------------------------------------------------


def try_rules(session: Session, key: str, text: str, event: dict[str, Any]) -> dict[str, Any]:
    """Dry-run a draft rule set against a sample event; nothing is done or stored (the caller
    rolls the transaction back)."""
    spec = valid_spec(session, "ruleset", key, text)
    try:
        return _try_rules(session, spec, event)
    except LimitExceeded as exc:
        raise locate_limit(exc, load_text(text, source_path("ruleset", key, text))) from None


def _try_rules(session: Session, spec: Any, event: dict[str, Any]) -> dict[str, Any]:
    from careloop.rules.runtime import _check_payload, evaluate

    if "payload" not in event and "type" not in event:
        event = {"type": "form.submitted", "payload": event}
    payload = event.get("payload")
    _check_payload(payload)
    assert isinstance(payload, dict)
    payload = {k: v for k, v in payload.items()
               if k not in ("patient_id", "encounter_id", "task_id", "submission_id")}
    outcome = evaluate(session, spec, 0, event_id="builder-try",
                       event_type=str(event.get("type") or "form.submitted"), payload=payload,
                       dry_run=True)
    data: dict[str, Any] = outcome.to_json()
    return data


# --- charts: the dashboard tile preview --------------------------------------------------------


def chart_preview(session: Session, chart: Any, scope: frozenset[str] | None,
                  locale: str) -> dict[str, Any]:
    """A chart drawn by the report engine (SVG through vl-convert, as a data URL an ``<img>``
    shows under the app's CSP), on the real aggregated data the user may see. A dataset with no
    rows yet draws nothing (never sample data a person could take for the hospital's): the
    answer says so instead."""
    import base64

    import vl_convert as vlc

    from careloop.engine.i18n import t
    from careloop.reports.charts import vega_lite
    from careloop.reports.runtime import dataset_of, run_cached

    data = run_cached(session, dataset_of(session, chart), scope=scope)
    if not data.rows:
        return {"image": None, "empty": True, "rows": 0,
                "message": t("builder.no_data", locale)}
    spec = vega_lite(chart, data, locale=locale)
    if "$schema" in spec and "vega-lite" not in str(spec["$schema"]):
        svg = vlc.vega_to_svg(spec)
    else:
        svg = vlc.vegalite_to_svg(spec)
    image = "data:image/svg+xml;base64," + base64.b64encode(str(svg).encode()).decode()
    return {"image": image, "empty": False, "rows": len(data.rows)}


# --- alerts: what a draft threshold would say now ---------------------------------------------


def try_alert(session: Session, key: str, text: str, scope: frozenset[str] | None,
              now: datetime | None = None) -> dict[str, Any]:
    """Evaluate a draft alert on the (scoped) data of its window, per group, without touching the
    alert's state rows or recording an event: the threshold designer's "try it"."""
    from careloop.reports.alerts import _OPS, _window
    from careloop.reports.query import run_dataset
    from careloop.reports.spec import DatasetSpec

    spec = valid_spec(session, "alert", key, text)
    dataset = spec.inline_dataset
    if dataset is None:
        row = store.current(session, "dataset", spec.dataset)
        if row is None:
            raise BuilderError("builder.invalid", 422, n=1)
        dataset = store.compile_row(row, DatasetSpec)
    now = now or now_utc()
    window = _window(spec, now)
    result = run_dataset(session, dataset, filters=window, scope=scope,
                         dimensions=(spec.group_by,), now=now)
    rows = []
    for r in result.rows:
        group, value = r[spec.group_by], r[spec.measure]
        if group is None:
            continue
        rows.append({"group": str(group), "value": value,
                     "breach": value is not None and _OPS[spec.op](value, spec.value)})
    rows.sort(key=lambda r: r["group"])
    return {"rows": rows, "op": spec.op, "threshold": spec.value,
            "date_from": str(window.date_from), "date_to": str(window.date_to),
            "breaching": sum(1 for r in rows if r["breach"])}


def dataset_columns(session: Session, key: str) -> dict[str, list[str]] | None:
    """A stored dataset's dimensions and measures (the designers' pickers)."""
    from careloop.reports.spec import DatasetSpec

    row = store.current(session, "dataset", key)
    if row is None:
        return None
    spec = store.compile_row(row, DatasetSpec)
    return {"dimensions": list(spec.dimensions), "measures": [m.key for m in spec.measures]}


# --- catalogue for the form builder -----------------------------------------------------------


def field_palette() -> list[dict[str, Any]]:
    """Every registered field type with its option JSON Schema (the property panel's source)."""
    return [ftype.panel() for _, ftype in loaded_registry().catalogue("field_type").items()]


def score_method_palette() -> list[dict[str, Any]]:
    """Every registered score method that can compute (``name``, ``title``, ``options``…)."""
    return [method.panel() for _, method in loaded_registry().catalogue("score_method").items()
            if callable(getattr(method, "panel", None))]


# --- catalogue for the flow designer -----------------------------------------------------------

def _inline_refs(node: Any, defs: dict[str, Any], seen: tuple[str, ...] = ()) -> Any:
    """``node`` with every ``{"$ref": "#/$defs/x"}`` replaced by a copy of ``$defs.x`` marked
    ``"x-def": "x"`` (the property panel picks its widget by it: ``text``, ``duration``,
    ``assignee``, ``until``, ``expression``, ``key``)."""
    if isinstance(node, list):
        return [_inline_refs(v, defs, seen) for v in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        name = ref.removeprefix("#/$defs/")
        if name in seen or name not in defs:
            return {k: v for k, v in node.items() if k != "$ref"} | {"x-def": name}
        target = _inline_refs(defs[name], defs, (*seen, name))
        rest = {k: _inline_refs(v, defs, seen) for k, v in node.items() if k != "$ref"}
        return {**target, **rest, "x-def": name}
    return {k: _inline_refs(v, defs, seen) for k, v in node.items()}


def step_palette() -> list[dict[str, Any]]:
    """Every registered step type as its :class:`~careloop.flows.step_types.StepType` describes
    itself, which is all the flow designer draws and checks a step from (no graph rule in JS):
    ``title``; ``options`` (property name → its JSON Schema, ``$ref``s inlined and marked
    ``x-def``, registry enums filled in, a reference marked ``x-reference``); ``required`` (a
    list inside means "one of these", the ``modes``); ``modes``; ``edges`` (option, label,
    many/item/fallback/mode/fork); ``pauses``; ``labels`` (per option label/help);
    ``resumes``; ``retry``."""
    from careloop.engine.schema import fill_registry_enums, kind_schema
    from careloop.flows.step_types import registered

    defs: dict[str, Any] = kind_schema("flow")["$defs"]
    out = []
    for name, step in registered():
        options = copy.deepcopy(step.option_schemas())
        fill_registry_enums(options, loaded_registry())
        inlined = {o: _inline_refs(schema, defs) for o, schema in options.items()}
        fill_registry_enums(inlined, loaded_registry())
        label_enums(inlined)   # every enum value in words (责任护士, 紧急, 微信)
        for path, kind in step.references:  # a nested reference (until.calendar) is marked too
            node: Any = inlined
            for part in path.split("."):
                node = (node.get("properties", node) if "properties" in node else node).get(part)
                if not isinstance(node, dict):
                    break
            if isinstance(node, dict):
                node["x-reference"] = kind
        out.append({
            **step.describe(), "name": name, "options": inlined,
            "required": [*step.required, *([list(step.modes)] if step.modes else [])]})
    return out


def definition_keys(session: Session, kind: str) -> list[dict[str, Any]]:
    """The current definitions of one kind (key, title, app): the choices of the flow designer's
    ``form``, ``template``, ``flow`` and ``calendar`` selects."""
    folder_of(kind)
    return [{"key": row.key, "title": dict(row.title or {}), "app": row.app_id}
            for row in sorted(store.list_current(session, kind=kind), key=lambda r: r.key)]


def json_text(body: dict[str, Any]) -> str:
    return json.dumps(body, ensure_ascii=False, indent=2)


# --- simulate: run the app's journey scenarios against the user's drafts ---------------------


def app_scenarios(session: Session, user_id: int, app_id: str) -> list[dict[str, Any]]:
    """The scenarios ``simulate`` can run for ``app_id``: its published ones and the user's
    drafts of new ones (``key``, ``title``, ``draft``)."""
    found: dict[str, dict[str, Any]] = {
        row.key: {"key": row.key, "title": dict(row.title or {}), "draft": False}
        for row in store.list_current(session, kind="scenario", app_id=app_id)}
    for draft in session.scalars(select(BuilderDraft).where(
            BuilderDraft.user_id == user_id, BuilderDraft.kind == "scenario",
            BuilderDraft.app_id == app_id)):
        body = yaml.safe_load(draft.text) if draft.text.strip() else None
        title = body.get("title") if isinstance(body, dict) else None
        found[draft.key] = {"key": draft.key, "draft": True,
                            "title": title if isinstance(title, dict)
                            else found.get(draft.key, {}).get("title", {})}
    return [found[k] for k in sorted(found)]


def simulate(*, editor: Principal, app_id: str, kind: str, key: str, text: str,
             scenarios: list[str] | None, timeout: float | None = None) -> dict[str, Any]:
    """Run ``scenarios`` (``None``: all) of ``app_id`` in a scratch SQLite database, with the
    app and every app beside it as the user's drafts would make them: the stored definitions,
    the user's saved drafts over them, and ``text`` as ``kind/key``. The live database is only
    read, in a short transaction before the run. Raises :class:`BuilderError` when the user may
    not edit the app, the app has no such scenario, ``CARELOOP_SIMULATE_CONCURRENCY`` runs are
    already under way, or the run is stopped at the time limit."""
    import tempfile
    from pathlib import Path

    from careloop.engine.db import transaction
    from careloop.web import simulate as sim

    with tempfile.TemporaryDirectory(prefix="careloop-simulate-") as tmp:
        folder = Path(tmp)
        with transaction() as session:
            require_editor(session, editor, app_id)
            drafts = {(d.kind, d.key): sim.Draft(d.app_id, d.kind, d.key, d.text,
                                                 source_path(d.kind, d.key, d.text))
                      for d in session.scalars(select(BuilderDraft).where(
                          BuilderDraft.user_id == editor.user_id))}
            drafts[(kind, key)] = sim.Draft(app_id, kind, key, text,
                                            source_path(kind, key, text))
            known = {s["key"] for s in app_scenarios(session, editor.user_id, app_id)}
            if kind == "scenario":
                known.add(key)
            if not known:
                raise BuilderError("builder.simulate_none", 404, app=app_id)
            unknown = sorted(set(scenarios or ()) - known)
            if unknown:
                raise BuilderError("builder.simulate_unknown", 404,
                                   scenario=", ".join(unknown))
            sim.write_apps(session, folder / "apps", list(drafts.values()))
        if not sim.RUNNING.acquire(blocking=False):
            raise BuilderError("builder.simulate_busy", 429)
        try:
            outcome = sim.run_in_child(folder, app_id, scenarios, timeout)
        except sim.SimulateTimeout as exc:
            raise BuilderError("builder.simulate_timeout", 504,
                               seconds=f"{exc.seconds:g}") from exc
        except sim.SimulateFailed as exc:
            raise BuilderError("builder.simulate_failed", 500, reason=str(exc)) from exc
        finally:
            sim.RUNNING.release()
    problems = outcome.get("problems") or []
    runs = outcome.get("scenarios") or []
    return {"ok": not problems and bool(runs) and all(r.get("ok") for r in runs),
            "app": app_id, "database": "sqlite", "problems": problems, "scenarios": runs}
