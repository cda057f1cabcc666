"""Administration pages: users and roles, departments and wards, bundles, the audit log."""

from __future__ import annotations

import base64
import binascii
import hashlib
import pathlib
import tempfile
from datetime import datetime, timedelta
from typing import Any

from fastapi import (
    APIRouter,
    Depends,
    File,
    Form,
    HTTPException,
    Path,
    Query,
    Request,
    UploadFile,
)
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select

from careloop.engine import audit as audit_log
from careloop.engine import dispatcher, store
from careloop.engine.bundles import (
    BundleError,
    ImportPlan,
    import_bundle,
    open_conflicts,
    resolve_conflict,
)
from careloop.engine.clock import hospital_tz
from careloop.engine.db import transaction
from careloop.engine.domain import Department, RoleGrant, User
from careloop.engine.errors import DefinitionInvalid, NotFound
from careloop.engine.i18n import t
from careloop.engine.models import BundleRow
from careloop.engine.registry import loaded_registry
from careloop.web import admin, throttle
from careloop.web.deps import client_ip, locale_of, record, request_id, require
from careloop.web.models import AdminRequest
from careloop.web.permissions import (
    ADMIN_DEPARTMENTS,
    ADMIN_USERS,
    AUDIT_VIEW,
    BUNDLE_EXPORT,
    BUNDLE_IMPORT,
    MAX_ID,
    PERMISSIONS,
    Principal,
    permissions_of,
)
from careloop.web.render import render

router = APIRouter(prefix="/admin", include_in_schema=False)
UPLOAD = File()

NEEDS_ADMIN_DEPARTMENTS = Depends(require(ADMIN_DEPARTMENTS))
NEEDS_ADMIN_USERS = Depends(require(ADMIN_USERS))
NEEDS_AUDIT_VIEW = Depends(require(AUDIT_VIEW))
NEEDS_BUNDLE_EXPORT = Depends(require(BUNDLE_EXPORT))
NEEDS_BUNDLE_IMPORT = Depends(require(BUNDLE_IMPORT))


HOSPITAL_WIDE = "*"  # the grant forms' explicit choice for a hospital-wide grant


def _scope(value: str) -> str | None:
    """The department of a grant form: ``*`` is hospital-wide; nothing chosen is refused (the
    forms have no privileged default)."""
    if not value:
        raise admin.AdminError("web.sod.choose_scope")
    return None if value == HOSPITAL_WIDE else value


def _users_page(request: Request, error: str | None = None, status: int = 200,
                notice: str | None = None) -> Response:
    with transaction() as session:
        users = session.scalars(select(User).order_by(User.username)).all()
        grants = session.scalars(select(RoleGrant)).all()
        delayed = throttle.delayed_accounts(session, {u.username: u.id for u in users})
        by_user: dict[int, list[RoleGrant]] = {}
        for g in grants:
            by_user.setdefault(g.user_id, []).append(g)
        departments = session.scalars(select(Department).order_by(Department.id)).all()
        pending = admin.pending_requests(session)
        session.expunge_all()
    roles = loaded_registry().catalogue("role").items()
    return render(request, "admin_users.html", status_code=status, users=users, grants=by_user,
                  delayed=delayed, roles=roles, departments=departments, error=error,
                  pending=pending, notice=notice,
                  role_titles={name: info.title for name, info in roles},
                  user_names={u.id: u.display_name for u in users},
                  department_titles={d.id: d.name for d in departments})


def _error(request: Request, exc: admin.AdminError) -> Response:
    return _users_page(request, t(exc.key, locale_of(request), **exc.params), 400)


def _done(pending: object) -> Response:
    return RedirectResponse("/admin/users" + ("?pending=1" if pending else ""),
                            status_code=303)


@router.get("/users")
def users(request: Request, pending: int = 0, me: Principal = NEEDS_ADMIN_USERS) -> Response:
    notice = t("web.sod.pending_created", locale_of(request)) if pending else None
    return _users_page(request, notice=notice)


@router.post("/users")
def user_create(request: Request, username: str = Form(max_length=64),
                display_name: str = Form("", max_length=128),
                password: str = Form(max_length=256), role: str = Form("", max_length=32),
                department_id: str = Form("", max_length=64),
                me: Principal = NEEDS_ADMIN_USERS) -> Response:
    try:
        if not role:
            raise admin.AdminError("web.sod.choose_role")
        scope = _scope(department_id)
        with transaction() as session:
            user = admin.create_user(session, username=username.strip(),
                                     display_name=display_name.strip(), password=password)
            result = admin.request_grant(session, me, user, role, scope)
            record(request, me, "user.create", session=session, object_type="user",
                   object_id=user.username, details={"role": role, "department": scope})
            pending = isinstance(result, AdminRequest)
            if pending:
                record(request, me, "permission.request", session=session,
                       object_type="user", object_id=user.username,
                       details={"role": role, "department": scope})
    except admin.AdminError as exc:
        return _error(request, exc)
    return _done(pending)


@router.post("/users/{user_id}/grants")
def grant_add(request: Request, user_id: int = Path(ge=1, le=MAX_ID),
              role: str = Form("", max_length=32),
              department_id: str = Form("", max_length=64),
              me: Principal = NEEDS_ADMIN_USERS) -> Response:
    try:
        if not role:
            raise admin.AdminError("web.sod.choose_role")
        scope = _scope(department_id)
        with transaction() as session:
            user = session.get(User, user_id)
            if user is None:
                raise HTTPException(status_code=404)
            result = admin.request_grant(session, me, user, role, scope)
            pending = isinstance(result, AdminRequest)
            record(request, me, "permission.request" if pending else "permission.grant",
                   session=session, object_type="user", object_id=user.username,
                   details={"role": role, "department": scope})
    except admin.AdminError as exc:
        _refused(request, me, "permission.grant", user_id, exc, {"role": role})
        return _error(request, exc)
    return _done(pending)


def _refused(request: Request, me: Principal, action: str, user_id: int,
             exc: admin.AdminError, details: dict[str, Any]) -> None:
    if exc.key.startswith("web.sod."):
        record(request, me, action, outcome="denied", object_type="user",
               object_id=str(user_id), details={**details, "reason": exc.key})


@router.post("/users/{user_id}/grants/{grant_id}/revoke")
def grant_revoke(request: Request, user_id: int = Path(ge=1, le=MAX_ID),
                 grant_id: int = Path(ge=1, le=MAX_ID),
                 me: Principal = NEEDS_ADMIN_USERS) -> Response:
    try:
        with transaction() as session:
            row = session.get(RoleGrant, grant_id)
            user = session.get(User, user_id)
            if row is None or user is None or row.user_id != user_id:
                raise HTTPException(status_code=404)
            details = {"role": row.role, "department": row.department_id}
            pending = admin.request_revoke(session, me, row)
            record(request, me, "permission.request" if pending else "permission.revoke",
                   session=session, object_type="user", object_id=user.username,
                   details={**details, "action": "revoke"} if pending else details)
    except admin.AdminError as exc:
        _refused(request, me, "permission.revoke", user_id, exc, {})
        return _error(request, exc)
    return _done(pending)


@router.post("/users/{user_id}/status")
def user_status(request: Request, user_id: int = Path(ge=1, le=MAX_ID),
                action: str = Form(max_length=16),
                me: Principal = NEEDS_ADMIN_USERS) -> Response:
    if action not in ("activate", "deactivate", "unlock"):
        raise HTTPException(status_code=400)
    try:
        with transaction() as session:
            user = session.get(User, user_id)
            if user is None:
                raise HTTPException(status_code=404)
            pending = admin.request_status(session, me, user, action)
            record(request, me, "permission.request" if pending else f"user.{action}",
                   session=session, object_type="user", object_id=user.username,
                   details={"action": action} if pending else None)
    except admin.AdminError as exc:
        _refused(request, me, f"user.{action}", user_id, exc, {})
        return _error(request, exc)
    return _done(pending)


@router.post("/requests/{request_id}/{decision}")
def request_decide(request: Request, request_id: int = Path(ge=1, le=MAX_ID),
                   decision: str = Path(pattern="^(approve|reject)$"),
                   me: Principal = NEEDS_ADMIN_USERS) -> Response:
    """A second security administrator approves or rejects a pending request (audited)."""
    try:
        with transaction() as session:
            row = admin.decide(session, me, request_id, decision == "approve")
            user = session.get(User, row.user_id)
            record(request, me, f"permission.{decision}", session=session,
                   object_type="admin_request", object_id=str(request_id),
                   details={"action": row.action, "role": row.role,
                            "department": row.department_id,
                            "user": user.username if user else None,
                            "requested_by": row.requested_by})
    except admin.AdminError as exc:
        record(request, me, f"permission.{decision}", outcome="denied",
               object_type="admin_request", object_id=str(request_id),
               details={"reason": exc.key})
        return _error(request, exc)
    return RedirectResponse("/admin/users", status_code=303)


@router.get("/roles")
def roles(request: Request, me: Principal = NEEDS_ADMIN_USERS) -> Response:
    table = [(name, info, permissions_of(name))
             for name, info in loaded_registry().catalogue("role").items()]
    return render(request, "admin_roles.html", roles=table, permissions=PERMISSIONS)


def _departments_page(request: Request, error: str | None = None,
                      status: int = 200) -> Response:
    with transaction() as session:
        rows = session.scalars(select(Department).order_by(Department.id)).all()
        session.expunge_all()
    return render(request, "admin_departments.html", status_code=status, departments=rows,
                  error=error, names={d.id: d.name for d in rows})


@router.get("/departments")
def departments(request: Request,
                me: Principal = NEEDS_ADMIN_DEPARTMENTS) -> Response:
    return _departments_page(request)


@router.post("/departments")
def department_create(request: Request, id: str = Form(max_length=64),
                      name_zh: str = Form(max_length=128), name_en: str = Form("", max_length=128),
                      parent_id: str = Form("", max_length=64),
                      me: Principal = NEEDS_ADMIN_DEPARTMENTS) -> Response:
    try:
        with transaction() as session:
            admin.create_department(session, id=id.strip(), name_zh=name_zh.strip(),
                                    name_en=name_en.strip(), parent_id=parent_id or None)
            record(request, me, "department.create", session=session,
                   object_type="department", object_id=id.strip())
    except admin.AdminError as exc:
        return _departments_page(request, t(exc.key, locale_of(request)), 400)
    return RedirectResponse("/admin/departments", status_code=303)


@router.post("/departments/{department_id}/sensitive")
def department_sensitive(request: Request, department_id: str = Path(max_length=64),
                         sensitive: str = Form(pattern="^[01]$"),
                         me: Principal = NEEDS_ADMIN_DEPARTMENTS) -> Response:
    """Mark a department sensitive (its stays seen by its own staff only) or not; audited."""
    with transaction() as session:
        row = session.get(Department, department_id)
        if row is None or row.kind != "department":
            raise HTTPException(status_code=404)
        row.sensitive = sensitive == "1"
        record(request, me, "department.sensitive", session=session, object_type="department",
               object_id=department_id, details={"sensitive": row.sensitive})
    return RedirectResponse("/admin/departments", status_code=303)


@router.get("/break-glass")
def break_glass(request: Request, me: Principal = NEEDS_ADMIN_USERS) -> Response:
    """Every break-the-glass opening of a sensitive stay, newest first, for the security
    administrator: who, when (hospital time), which patient (opaque id) and why."""
    from careloop.engine.clock import to_local
    from careloop.engine.models import AuditRow
    from careloop.web.permissions import BREAK_GLASS, BREAK_GLASS_HOURS

    with transaction() as session:
        audit_rows = session.scalars(select(AuditRow).where(AuditRow.action == BREAK_GLASS)
                                     .order_by(AuditRow.id.desc()).limit(500)).all()
        names = {str(u): str(n) for u, n in session.execute(
            select(User.username, User.display_name)).all()}
        rows = [{"at": to_local(r.at).strftime("%Y-%m-%d %H:%M"),
                 "who": names.get(r.actor, r.actor), "patient": r.patient_id or "",
                 "reason": (r.details or {}).get("reason", "")} for r in audit_rows]
        record(request, me, "audit.view", session=session, details={"action": BREAK_GLASS})
    return render(request, "admin_break_glass.html", rows=rows, hours=BREAK_GLASS_HOURS)


@router.get("/api-keys")
def api_keys(request: Request, me: Principal = NEEDS_ADMIN_USERS) -> Response:
    """The systems' API keys: scopes, created, expiry and last use (hospital time), state."""
    from careloop.engine.clock import to_local
    from careloop.flows.ingest import key_state, list_api_keys, scopes_of

    def local(value: datetime | None) -> str | None:
        return to_local(value).strftime("%Y-%m-%d %H:%M") if value is not None else None

    with transaction() as session:
        keys = [{"id": k.id, "name": k.name, "prefix": k.prefix, "scopes": scopes_of(k),
                 "created": local(k.created_at), "expires": local(k.expires_at),
                 "last_used": local(k.last_used_at), "state": key_state(k)}
                for k in list_api_keys(session)]
    return render(request, "admin_api_keys.html", keys=keys)


@router.post("/api-keys/{key_id}/revoke")
def api_key_revoke(request: Request, key_id: int = Path(ge=1, le=MAX_ID),
                   me: Principal = NEEDS_ADMIN_USERS) -> Response:
    from careloop.flows.ingest import ApiKeyError, revoke_api_key

    try:
        with transaction() as session:
            row = revoke_api_key(session, key_id)
            record(request, me, "apikey.revoke", session=session, object_type="api_key",
                   object_id=row.name)
    except ApiKeyError:
        raise HTTPException(status_code=404) from None
    return RedirectResponse("/admin/api-keys", status_code=303)


def _bundles_page(request: Request, plan: ImportPlan | None = None, payload: str | None = None,
                  digest: str | None = None, errors: list[str] | None = None,
                  status: int = 200) -> Response:
    with transaction() as session:
        rows = session.scalars(select(BundleRow).order_by(BundleRow.id)).all()
        conflicts = len(open_conflicts(session))
    return render(request, "admin_bundles.html", status_code=status, bundles=rows,
                  plan=plan.to_json() if plan else None, payload=payload, digest=digest,
                  errors=errors or [], open_conflicts=conflicts)


@router.get("/bundles")
def bundles(request: Request, me: Principal = NEEDS_BUNDLE_IMPORT) -> Response:
    return _bundles_page(request)


def _plan(data: bytes, apply: bool, actor: str) -> ImportPlan:
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "upload.zip"
        path.write_bytes(data)
        return import_bundle(path, dry_run=not apply, actor=actor)


def _problems(exc: Exception) -> list[str]:
    if isinstance(exc, DefinitionInvalid):
        return [p.render() for p in exc.problems]
    return [str(exc)]


@router.post("/bundles/plan")
def bundle_plan(request: Request, file: UploadFile = UPLOAD,
                me: Principal = NEEDS_BUNDLE_IMPORT) -> Response:
    """Show what importing the uploaded zip would change; nothing is written."""
    data = file.file.read()
    try:
        plan = _plan(data, apply=False, actor=me.username)
    except (BundleError, DefinitionInvalid) as exc:
        return _bundles_page(request, errors=_problems(exc), status=400)
    return _bundles_page(request, plan=plan, payload=base64.b64encode(data).decode(),
                         digest=hashlib.sha256(data).hexdigest())


@router.post("/bundles/apply")
def bundle_apply(request: Request, payload: str = Form(), digest: str = Form(max_length=64),
                 me: Principal = NEEDS_BUNDLE_IMPORT) -> Response:
    """Apply the planned zip (sent back by the plan page; its digest must match)."""
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise HTTPException(status_code=400) from exc
    if hashlib.sha256(data).hexdigest() != digest:
        raise HTTPException(status_code=400)
    try:
        plan = _plan(data, apply=True, actor=me.username)
    except (BundleError, DefinitionInvalid) as exc:
        record(request, me, "bundle.import", outcome="failure", object_type="bundle",
               details={"errors": len(_problems(exc))})
        return _bundles_page(request, errors=_problems(exc), status=400)
    record(request, me, "bundle.import_request", object_type="bundle", object_id=plan.app_id,
           details={"applied": plan.applied})
    return _bundles_page(request, plan=plan)


def _conflicts_page(request: Request, errors: list[str] | None = None,
                    status: int = 200) -> Response:
    with transaction() as session:
        items = []
        for conflict in open_conflicts(session):
            live = store.current(session, conflict.kind, conflict.key)
            items.append({"id": conflict.id, "app": conflict.app_id, "kind": conflict.kind,
                          "key": conflict.key, "title": (live.title if live else None)
                          or conflict.title, "removed": conflict.content_hash is None,
                          "bundle_version": conflict.bundle_version,
                          "detected_at": conflict.detected_at, "diff": conflict.diff,
                          "live_version": live.version if live else conflict.live_version,
                          "published_by": live.created_by if live else None,
                          "published_at": live.created_at if live else None})
    return render(request, "admin_bundle_conflicts.html", status_code=status,
                  conflicts=items, errors=errors or [])


@router.get("/bundles/conflicts")
def bundle_conflicts(request: Request, me: Principal = NEEDS_BUNDLE_IMPORT) -> Response:
    """Definitions changed both in the builder and in their bundle, waiting for a decision."""
    return _conflicts_page(request)


@router.post("/bundles/conflicts/{conflict_id}/{keep}")
def bundle_conflict_resolve(request: Request, conflict_id: int = Path(ge=1, le=MAX_ID),
                            keep: str = Path(pattern="^(builder|bundle)$"),
                            me: Principal = NEEDS_BUNDLE_IMPORT) -> Response:
    """Keep the builder's version, or take the bundle's as a new version (audited)."""
    try:
        with transaction() as session:
            resolve_conflict(session, conflict_id, keep, actor=me.username,
                             actor_role=me.role_label, ip=client_ip(request),
                             request_id=request_id(request))
    except NotFound:
        raise HTTPException(status_code=404) from None
    except DefinitionInvalid as exc:
        return _conflicts_page(request, errors=_problems(exc), status=400)
    return RedirectResponse("/admin/bundles/conflicts", status_code=303)


@router.get("/bundles/{app_id}/export")
def bundle_export(request: Request, app_id: str,
                  me: Principal = NEEDS_BUNDLE_EXPORT) -> Response:
    from careloop.engine.bundles import export_bundle
    from careloop.engine.errors import NotFound

    try:
        data = export_bundle(app_id)
    except NotFound as exc:
        raise HTTPException(status_code=404) from exc
    record(request, me, "bundle.export", object_type="bundle", object_id=app_id)
    return Response(data, media_type="application/zip", headers={
        "content-disposition": f'attachment; filename="{app_id}.zip"'})


def _day(value: str) -> datetime | None:
    try:
        return datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=hospital_tz())
    except ValueError:
        return None


@router.get("/audit")
def audit_page(request: Request, actor: str = "", action: str = "", patient_id: str = "",
               outcome: str = "", object_id: str = "", since: str = "", until: str = "",
               before: int | None = Query(None, ge=1, le=MAX_ID), verify: bool = False,
               me: Principal = NEEDS_AUDIT_VIEW) -> Response:
    filters = {"actor": actor, "action": action, "patient_id": patient_id, "outcome": outcome,
               "object_id": object_id}
    end = _day(until)
    with transaction() as session:
        rows = session.scalars(admin.audit_query(
            filters, before_id=before, since=_day(since),
            until=end + timedelta(days=1) if end else None)).all()
        breaks = list(audit_log.verify(session)) if verify else None
        actors = {r.actor for r in rows}
        people = dict(session.execute(select(User.username, User.display_name).where(
            User.username.in_(actors))).all()) if actors else {}
        record(request, me, "audit.view", session=session,
               details={k: v for k, v in filters.items() if v})
    return render(request, "admin_audit.html", rows=rows, filters=filters, since=since,
                  until=until, breaks=breaks, verified=verify, people=people)


# --- flow operations: incidents (retry / skip) and the outbox monitor ------------------------


def _outbox_rows(session: Any, status: str | None, locale: str) -> list[dict[str, Any]]:
    """The newest 100 messages with status and reason in words and times in local time (no
    message text, no address: the body may carry a patient's name)."""
    from careloop.engine.clock import now_utc, to_local
    from careloop.flows.models import OutboxMessage
    from careloop.flows.outbox import CANCELLABLE, resendable

    def local(value: datetime | None) -> str:
        return to_local(value).strftime("%Y-%m-%d %H:%M") if value is not None else ""

    query = select(OutboxMessage).order_by(OutboxMessage.id.desc()).limit(100)
    if status:
        query = query.where(OutboxMessage.status == status)
    now = now_utc()
    return [{"id": m.id, "template": m.template_key, "channel": m.channel, "status": m.status,
             "status_text": t(f"web.outbox.status.{m.status}", locale),
             "reason": t(f"flows.outbox.reason.{m.reason}", locale) if m.reason else "",
             "attempts": m.attempts, "created_at": local(m.created_at),
             "due_at": local(m.next_attempt_at), "expires_at": local(m.expires_at),
             "sent_at": local(m.sent_at), "can_resend": resendable(m, now),
             "can_cancel": m.status in CANCELLABLE}
            for m in session.scalars(query).all()]


@router.get("/flows")
def flow_ops(request: Request, outbox: str = "", done: str = "",
             me: Principal = NEEDS_BUNDLE_IMPORT) -> Response:
    """Open flow incidents and the outbox (ids, templates, channels, states and reasons)."""
    from sqlalchemy import func

    from careloop.flows.models import OutboxMessage
    from careloop.flows.outbox import STATUSES
    from careloop.flows.views import incidents_json

    locale = locale_of(request)
    status = outbox if outbox in STATUSES else None
    with transaction() as session:
        incidents = incidents_json(session, "open")
        messages = _outbox_rows(session, status, locale)
        counts = {str(status): int(n) for status, n in session.execute(
            select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status)).all()}
    ordered = {s: (t(f"web.outbox.status.{s}", locale), int(counts[s]))
               for s in STATUSES if s in counts}
    notice = None
    kind, _, number = done.partition(":")
    if kind in ("resent", "cancelled") and number.isdigit():
        notice = t(f"web.outbox.{kind}", locale, id=number)
    return render(request, "admin_flows.html", incidents=incidents, outbox=messages,
                  outbox_counts=ordered, outbox_filter=status, notice=notice)


@router.post("/flows/outbox/{message_id}/{action}")
def outbox_action(request: Request, message_id: int = Path(ge=1, le=MAX_ID),
                  action: str = Path(pattern="^(resend|cancel)$"),
                  me: Principal = NEEDS_BUNDLE_IMPORT) -> Response:
    """Resend a failed / expired / cancelled / logged message, or cancel a pending one."""
    from careloop.flows import outbox

    try:
        with transaction() as session:
            row = (outbox.resend if action == "resend" else outbox.cancel)(session, message_id)
            record(request, me, f"outbox.{action}", session=session,
                   object_type="outbox_message", object_id=str(message_id),
                   patient_id=row.patient_id)
    except outbox.OutboxError:
        record(request, me, f"outbox.{action}", outcome="failure",
               object_type="outbox_message", object_id=str(message_id))
        raise HTTPException(status_code=409) from None
    done = "resent" if action == "resend" else "cancelled"
    return RedirectResponse(f"/admin/flows?done={done}:{message_id}", status_code=303)


@router.post("/flows/incidents/{incident_id}/{action}")
def flow_incident(request: Request, incident_id: int = Path(ge=1, le=MAX_ID),
                  action: str = Path(pattern="^(retry|skip)$"),
                  me: Principal = NEEDS_BUNDLE_IMPORT) -> Response:
    from careloop.engine.errors import CareloopError
    from careloop.flows.runtime import resolve_incident

    try:
        with transaction() as session:
            resolve_incident(session, incident_id, action, me.username)
            record(request, me, f"flow.incident_{action}", session=session,
                   object_type="flow_incident", object_id=str(incident_id))
    except CareloopError:
        raise HTTPException(status_code=409) from None
    return RedirectResponse("/admin/flows", status_code=303)


# --- the integration queue: HIS events parked for an unknown code (CARELOOP_UNKNOWN_CODES=park) --


@router.get("/integration")
def integration_queue(request: Request, me: Principal = NEEDS_BUNDLE_IMPORT) -> Response:
    """Parked HIS events (type, event id, the unknown codes), the latest resolved ones below."""
    from careloop.flows.inbound.views import view_states
    from careloop.flows.ingest import parks_unknown_codes
    from careloop.flows.models import ParkedEvent
    from careloop.web.routes_hl7 import recent

    with transaction() as session:
        parked = session.scalars(select(ParkedEvent).where(ParkedEvent.status == "parked")
                                 .order_by(ParkedEvent.received_at, ParkedEvent.id)).all()
        resolved = session.scalars(select(ParkedEvent).where(ParkedEvent.status != "parked")
                                   .order_by(ParkedEvent.resolved_at.desc()).limit(50)).all()
        his_views = view_states(session)
        hl7 = recent(session, request.query_params.get("hl7"))
        session.expunge_all()
    return render(request, "admin_integration.html", parked=parked, resolved=resolved,
                  parking=parks_unknown_codes(), his_views=his_views, hl7=hl7,
                  event_queue=dispatcher.state(), failed_events=dispatcher.parked())


@router.post("/integration/events/{event_id}/retry")
def event_retry(request: Request, event_id: int = Path(ge=1, le=MAX_ID),
                me: Principal = NEEDS_BUNDLE_IMPORT) -> Response:
    """Put an event whose handlers failed every attempt back in the queue; audited."""
    if not dispatcher.retry_parked(None, event_id):
        raise HTTPException(status_code=409)
    with transaction() as session:
        record(request, me, "integration.event_retry", session=session,
               object_type="domain_event", object_id=str(event_id))
    dispatcher.wake()
    return RedirectResponse("/admin/integration#event-queue", status_code=303)


@router.post("/integration/{item_id}/{action}")
def integration_action(request: Request, item_id: int = Path(ge=1, le=MAX_ID),
                       action: str = Path(pattern="^(retry|dismiss)$"),
                       me: Principal = NEEDS_BUNDLE_IMPORT) -> Response:
    """Retry a parked event (after the code was created) or dismiss it; audited."""
    from careloop.engine.errors import CareloopError
    from careloop.flows.ingest import dismiss_parked, retry_parked

    try:
        with transaction() as session:
            if action == "retry":
                retry_parked(session, item_id, me.username)
            else:
                dismiss_parked(session, item_id, me.username)
            record(request, me, f"integration.{action}", session=session,
                   object_type="integration_queue", object_id=str(item_id))
    except CareloopError:
        raise HTTPException(status_code=409) from None
    return RedirectResponse("/admin/integration", status_code=303)
