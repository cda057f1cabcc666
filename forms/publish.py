"""Publishing a form outside a bundle (builder, CLI, tests): a published version is immutable;
a changed definition becomes the next version, an unchanged one is a no-op.

    publish_form(session, text, source_path="forms/demo.yaml", actor="admin")
    ──▶ DefinitionRow(kind="form", key="demo", version=2)   # if version 1 differed
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from careloop.engine import audit, store
from careloop.engine.check import check_documents
from careloop.engine.clock import now_utc
from careloop.engine.errors import DefinitionInvalid
from careloop.engine.models import DefinitionRow
from careloop.engine.sources import load_text


def publish_form(session: Session, text: str, *, source_path: str, actor: str,
                 app_id: str | None = None) -> DefinitionRow:
    """Check and store a form definition; raises :class:`DefinitionInvalid` (nothing stored)."""
    doc = load_text(text, source_path)

    def lookup(kind: str, key: str) -> dict[str, object] | None:
        row = store.current(session, kind, key)
        return None if row is None else {"stored": True}

    result = check_documents([doc], external=lookup)
    forms = [d for d in result.definitions.values() if d.kind == "form"]
    if not result.ok or len(forms) != 1:
        raise DefinitionInvalid(result.errors, f"{source_path}: not a valid form")
    definition = forms[0]
    latest = store.latest(session, "form", definition.key)
    if latest is not None and latest.content_hash == definition.content_hash:
        latest.retired_at = None
        return latest
    row = DefinitionRow(
        kind="form", key=definition.key, version=(latest.version + 1) if latest else 1,
        app_id=app_id if latest is None else latest.app_id,
        content_hash=definition.content_hash, title=definition.title, body=definition.body,
        source_text=text, source_path=source_path, created_at=now_utc(), created_by=actor)
    session.add(row)
    session.flush()
    audit.append(session, actor=actor, action="forms.publish", object_type="form",
                 object_id=f"{definition.key}@{row.version}", details={"hash": row.content_hash})
    return row
