"""``store.list_current`` is remembered for the rest of a transaction (an HIS batch asks once per
kind), never past it, and never once this transaction changes a definition row."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, event

from careloop.engine import store
from careloop.engine.bundles import import_bundle
from careloop.engine.clock import now_utc
from careloop.engine.db import transaction
from careloop.engine.models import DefinitionRow

APPS = Path(__file__).resolve().parents[2] / "app_definitions"


def _counting(engine: Engine) -> list[str]:
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute",
                 lambda conn, cursor, statement, *rest: statements.append(statement))
    return statements


def test_remembered_within_a_transaction_not_after(engine: Engine) -> None:
    import_bundle(APPS / "common", engine=engine)
    statements = _counting(engine)
    with transaction(engine) as session:
        first = store.list_current(session, "template")
        asked = len(statements)
        assert store.list_current(session, "template") is first
        assert len(statements) == asked  # no second query
    with transaction(engine) as session:
        store.list_current(session, "template")
    assert len(statements) > asked  # a new transaction asks the database again


def test_forgotten_when_this_transaction_changes_a_definition(engine: Engine) -> None:
    import_bundle(APPS / "common", engine=engine)
    with transaction(engine) as session:
        before = {r.key for r in store.list_current(session, "template")}
        row = store.current(session, "template", "diet_advice")
        assert row is not None
        row.retired_at = now_utc()  # pending, not flushed
        assert "diet_advice" not in {r.key for r in store.list_current(session, "template")}
        session.flush()
        assert "diet_advice" not in {r.key for r in store.list_current(session, "template")}
        row.retired_at = None
        session.flush()  # flushed before the next question: still seen
        assert {r.key for r in store.list_current(session, "template")} == before
        session.add(DefinitionRow(kind="template", key="zz_new", version=1, app_id=row.app_id,
                                  content_hash="x", source_path="t.yaml",
                                  source_text=row.source_text, body=row.body,
                                  title=row.title))
        session.flush()
        assert "zz_new" in {r.key for r in store.list_current(session, "template")}
        session.rollback()
