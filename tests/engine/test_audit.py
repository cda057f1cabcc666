from sqlalchemy import Engine

from careloop.engine import audit
from careloop.engine.db import transaction
from careloop.engine.models import AuditRow

from ..conftest import Tamper


def test_chain_verifies_and_detects_changed_and_deleted_rows(engine: Engine,
                                                             tamper: Tamper) -> None:
    with transaction(engine) as session:
        for i in range(4):
            audit.append(session, actor="u1", action="patient.view", patient_id=f"p{i}")
    with transaction(engine) as session:
        assert list(audit.verify(session)) == []
    with transaction(engine) as session:
        rows = session.query(AuditRow).order_by(AuditRow.id).all()
    tamper("UPDATE audit_log SET patient_id = 'someone-else' WHERE id = :id",
           {"id": rows[1].id})
    with transaction(engine) as session:
        breaks = list(audit.verify(session))
    assert [b.row_id for b in breaks] == [rows[1].id]
    tamper("DELETE FROM audit_log WHERE id = :id", {"id": rows[1].id})
    with transaction(engine) as session:
        breaks = list(audit.verify(session))
    assert [b.row_id for b in breaks] == [rows[2].id]
    assert "changed, deleted or moved" in breaks[0].reason


def test_audit_row_rolls_back_with_its_action(engine: Engine) -> None:
    try:
        with transaction(engine) as session:
            audit.append(session, actor="u1", action="export")
            raise RuntimeError("the action failed")
    except RuntimeError:
        pass
    with transaction(engine) as session:
        assert session.query(AuditRow).count() == 0


def test_appends_from_many_threads_keep_one_chain(engine: Engine) -> None:
    """Web handlers run in a thread pool: on SQLite the read of the last hash and the insert must
    not let another thread's row in between (pysqlite begins a transaction only at the insert)."""
    import threading

    start = threading.Barrier(8)

    def work(n: int) -> None:
        start.wait()
        for i in range(15):
            with transaction(engine) as session:
                session.query(AuditRow).count()  # a read first, as a handler's would be
                audit.append(session, actor=f"u{n}", action="patient.view", patient_id=f"p{i}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with transaction(engine) as session:
        assert session.query(AuditRow).count() == 120
        assert list(audit.verify(session)) == []
