"""Governed publishing: a definition that sends data out or acts hospital-wide is published only
once a second person approves it.

    builder publish ──▶ reasons(draft)? ── none ──▶ new version (as before)
                             │ some
                             ▼
           publish_requests row (awaiting) + a run of the ``definition_approval`` flow
           (its approval task goes to a hospital-wide px_office holder, never the author)
                             │  POST /api/v1/tasks/{id}/decision
                 approve ────┴──── reject
                    ▼                 ▼
      the stored text is published   request ``rejected``; nothing is published
      (``stale`` instead when the definition changed meanwhile: nothing is overwritten)

Reasons (:func:`reasons`), each shown in words (``govern.reason.<code>``):

- ``webhook``: a ``call_webhook`` (URL, method or body) the current version does not have;
- ``channel`` / ``recipient``: a message channel, or a recipient other than the patient, that
  no current definition of the hospital uses yet;
- ``hospital_wide``: a flow, rule set or decision table of a hospital-wide app.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from careloop.engine import audit, scope, store
from careloop.engine.check import content_hash
from careloop.engine.clock import now_utc
from careloop.engine.domain import Task
from careloop.engine.models import BundleRow, DefinitionRow
from careloop.engine.sources import load_text
from careloop.web.builder_models import PublishRequest
from careloop.web.permissions import BUILDER_EDIT, Principal, permissions_of

APPROVAL_FLOW = "definition_approval"
ACTING_KINDS = ("flow", "ruleset", "decision_table")
REASONS = ("webhook", "channel", "recipient", "hospital_wide")
REQUESTED, APPROVED, REJECTED = ("builder.publish_requested", "builder.publish_approved",
                                 "builder.publish_rejected")


class NotApprover(Exception):
    """The person deciding a publication may not: its author, or no hospital-wide editor."""


# --- what a definition sends out ---------------------------------------------------------------


def _walk(node: Any, found: set[str]) -> None:
    if isinstance(node, list):
        for item in node:
            _walk(item, found)
        return
    if not isinstance(node, dict):
        return
    if node.get("type") == "call_webhook" or isinstance(node.get("url"), str):
        found.add("webhook " + json.dumps(
            {"url": node.get("url"), "method": node.get("method", "POST"),
             "body": node.get("body") or {}}, sort_keys=True, ensure_ascii=False))
    channel = node.get("channel")
    if isinstance(channel, str):
        found.add(f"channel {channel}")
    channels = node.get("channels")
    if isinstance(channels, list):
        found.update(f"channel {c}" for c in channels if isinstance(c, str))
    to = node.get("to")
    if to is not None and to != "patient":
        found.add("recipient " + json.dumps(to, sort_keys=True, ensure_ascii=False))
    for value in node.values():
        _walk(value, found)


def signatures(body: Any) -> set[str]:
    """Everything a definition sends out: ``webhook {...}``, ``channel sms``,
    ``recipient {...}`` (a recipient other than the patient)."""
    found: set[str] = set()
    _walk(body, found)
    return found


def reasons(session: Session, app_id: str, kind: str, key: str,
            body: dict[str, Any]) -> list[str]:
    """Why publishing ``body`` as ``kind/key`` in ``app_id`` needs a second person's approval
    (empty: it does not)."""
    draft = signatures(body)
    current = store.current(session, kind, key)
    before = signatures(dict(current.body)) if current is not None else set()
    in_use: set[str] = set()
    for row in store.list_current(session):
        if (row.kind, row.key) != (kind, key):
            in_use |= {s for s in signatures(dict(row.body)) if not s.startswith("webhook ")}
    in_use |= before
    out = []
    if any(s.startswith("webhook ") and s not in before for s in draft):
        out.append("webhook")
    if any(s.startswith("channel ") and s not in in_use for s in draft):
        out.append("channel")
    if any(s.startswith("recipient ") and s not in in_use for s in draft):
        out.append("recipient")
    if kind in ACTING_KINDS and scope.is_hospital_wide(session, app_id):
        out.append("hospital_wide")
    return out


# --- the approval flow ---------------------------------------------------------------------------


def _approval_flow_text() -> str:
    return (resources.files("careloop.web").joinpath("data", "flows", f"{APPROVAL_FLOW}.yaml")
            .read_text("utf-8"))


def ensure_approval_flow(session: Session) -> None:
    """Store the packaged ``definition_approval`` flow (no app: nobody edits it in the builder)
    when it is missing or differs from the packaged one."""
    text = _approval_flow_text()
    doc = load_text(text, f"careloop/web/data/flows/{APPROVAL_FLOW}.yaml")
    body = dict(doc.data)
    digest = content_hash(body)
    current = store.current(session, "flow", APPROVAL_FLOW)
    if current is not None and current.content_hash == digest:
        return
    latest = store.latest(session, "flow", APPROVAL_FLOW)
    session.add(DefinitionRow(kind="flow", key=APPROVAL_FLOW,
                              version=(latest.version + 1) if latest else 1, app_id=None,
                              content_hash=digest, title=dict(body["title"]), body=body,
                              source_text=text, source_path=f"flows/{APPROVAL_FLOW}.yaml",
                              created_at=now_utc(), created_by="careloop"))
    session.flush()


def _title(session: Session, request: PublishRequest) -> dict[str, str]:
    app = session.get(BundleRow, request.app_id)
    app_name = dict(app.name) if app is not None and isinstance(app.name, dict) else {}
    current = store.current(session, request.kind, request.key)
    body = load_text(request.text, "draft.yaml").data
    title = body.get("title") if isinstance(body, dict) else None
    names = title if isinstance(title, dict) else (dict(current.title) if current else {})
    return {loc: f"{prefix}{app_name.get(loc) or request.app_id} › "
                 f"{names.get(loc) or request.key}"
            for loc, prefix in (("zh-CN", "审批发布："), ("en", "Approve publishing: "))}


def request_approval(session: Session, *, app_id: str, kind: str, key: str, text: str,
                     digest: str, base_version: int | None, why: list[str],
                     confirm_orphans: bool, actor: str, actor_role: str | None,
                     user_id: int | None, request_id: str | None = None,
                     ip: str | None = None) -> PublishRequest:
    """Write the request and start its approval run (one approver task, never the author's)."""
    from careloop.flows.runtime import start

    ensure_approval_flow(session)
    request = PublishRequest(app_id=app_id, kind=kind, key=key, text=text, content_hash=digest,
                             base_version=base_version, reasons=list(why),
                             confirm_orphans=confirm_orphans, requested_by=actor,
                             requested_by_user_id=user_id, status="awaiting",
                             created_at=now_utc())
    session.add(request)
    session.flush()
    department = sorted(scope.app_departments(session, app_id) or ())
    request.run_id = start(session, flow_key=APPROVAL_FLOW,
                           context={"publish_request": request.id,
                                    **({"department": department[0]} if department else {})},
                           idempotency_key=f"publish_request:{request.id}")
    title = _title(session, request)
    for task in tasks_of(session, request):
        task.title = title["zh-CN"][:255]
        task.details = {**(task.details or {}), "title": title, "publish_request": request.id,
                        "reasons": list(why)}
        if task.assignee_user_id is not None and task.assignee_user_id == user_id:
            task.assignee_user_id = None  # the author's own: to the role's queue instead
    audit.append(session, actor=actor, actor_role=actor_role, ip=ip, request_id=request_id,
                 action=REQUESTED, object_type=kind, object_id=key,
                 details={"app": app_id, "request": request.id, "reasons": list(why),
                          "content_hash": digest})
    return request


def tasks_of(session: Session, request: PublishRequest) -> list[Task]:
    from careloop.flows.models import StepRun

    if request.run_id is None:
        return []
    refs = [f"flow_step:{s}" for s in session.scalars(select(StepRun.id).where(
        StepRun.run_id == request.run_id))]
    return list(session.scalars(select(Task).where(Task.source_ref.in_(refs))
                                .order_by(Task.id))) if refs else []


def request_of_task(session: Session, task: Task) -> PublishRequest | None:
    details = task.details or {}
    request_id = details.get("publish_request")
    if not isinstance(request_id, int):
        return None
    return session.get(PublishRequest, request_id)


def check_approver(session: Session, task: Task, principal: Principal) -> None:
    """Refuse the author and anyone without a hospital-wide ``builder.edit`` grant."""
    request = request_of_task(session, task)
    if request is None:
        return
    if principal.username == request.requested_by or (
            request.requested_by_user_id is not None
            and principal.user_id == request.requested_by_user_id):
        raise NotApprover("the author of a definition cannot approve its publication")
    if not any(g.department_id is None and BUILDER_EDIT in permissions_of(g.role)
               for g in principal.grants):
        raise NotApprover("only a hospital-wide editor may approve a publication")


def on_decided(session: Session, task: Task, result: str, principal: Principal) -> None:
    """After a decision on a publication's approval task: publish (approved) or close."""
    from careloop.web import builder

    request = request_of_task(session, task)
    if request is None or request.status != "awaiting" or result == "open":
        return
    request.decided_by, request.decided_at = principal.username, now_utc()
    if result != "approved":
        request.status = "rejected"
        audit.append(session, actor=principal.username, actor_role=principal.role_label,
                     action=REJECTED, object_type=request.kind, object_id=request.key,
                     details={"app": request.app_id, "request": request.id})
        return
    current = store.current(session, request.kind, request.key)
    if (current.version if current is not None else None) != request.base_version:
        request.status = "stale"  # changed since: publishing would overwrite someone's work
        audit.append(session, actor=principal.username, actor_role=principal.role_label,
                     action=APPROVED, object_type=request.kind, object_id=request.key,
                     details={"app": request.app_id, "request": request.id, "stale": True})
        return
    row = builder.publish(session, actor=request.requested_by, actor_role=None,
                          app_id=request.app_id, kind=request.kind, key=request.key,
                          text=request.text, confirm_orphans=request.confirm_orphans,
                          approved_by=principal.username)
    assert isinstance(row, DefinitionRow)  # approved: published, never requested again
    request.status, request.version = "published", row.version
    audit.append(session, actor=principal.username, actor_role=principal.role_label,
                 action=APPROVED, object_type=request.kind, object_id=request.key,
                 details={"app": request.app_id, "request": request.id,
                          "version": row.version})


def awaiting(session: Session, kind: str, key: str) -> PublishRequest | None:
    """The latest publication of ``kind/key`` still waiting for approval."""
    return session.scalars(select(PublishRequest).where(
        PublishRequest.kind == kind, PublishRequest.key == key,
        PublishRequest.status == "awaiting").order_by(PublishRequest.id.desc())).first()


def request_json(request: PublishRequest) -> dict[str, Any]:
    return {"request": request.id, "status": request.status, "reasons": list(request.reasons),
            "app": request.app_id, "kind": request.kind, "key": request.key,
            "version": request.version}
