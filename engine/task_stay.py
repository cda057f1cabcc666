"""A task's copy of its stay's department and ward, kept by the database.

``tasks.stay_department_id`` / ``tasks.stay_ward_id`` hold the department and ward of the task's
encounter, so that the inbox's sensitive-stay check (``web/permissions.py``:
``task_visibility``) reads the task's own row instead of looking up its encounter for every task
of a view. Triggers (migration 0040) keep the copy, whichever process or statement writes:

* a task inserted with an ``encounter_id`` and no copy gets its stay's department and ward (a
  writer that already knows them — the benchmark generator's ``COPY`` — may give them);
* a task whose ``encounter_id`` changes gets the new stay's (``NULL`` without one);
* a stay moved to another department or ward (an HIS transfer) moves its tasks' copies in the
  same statement.

Whether a department is sensitive is not copied: the condition reads ``departments`` when it runs,
so an administrator's change is seen by the next query without touching any task. On PostgreSQL
the insert reads the stay ``FOR SHARE``: a transfer committing meanwhile waits, or is waited for,
and its update then finds the new task (READ COMMITTED, the application's isolation level).
"""

from __future__ import annotations

from sqlalchemy import Connection, text

_PG_FUNCTION = """
CREATE OR REPLACE FUNCTION careloop_task_stay() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.encounter_id IS NULL THEN
        NEW.stay_department_id := NULL;
        NEW.stay_ward_id := NULL;
    ELSE
        SELECT department_id, ward_id INTO NEW.stay_department_id, NEW.stay_ward_id
        FROM encounters WHERE id = NEW.encounter_id FOR SHARE;
    END IF;
    RETURN NEW;
END
$$"""

_PG_MOVED = """
CREATE OR REPLACE FUNCTION careloop_stay_moved() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE tasks SET stay_department_id = NEW.department_id, stay_ward_id = NEW.ward_id
    WHERE encounter_id = NEW.id;
    RETURN NULL;
END
$$"""

_PG = (
    _PG_FUNCTION,
    _PG_MOVED,
    "CREATE TRIGGER tasks_stay_insert BEFORE INSERT ON tasks FOR EACH ROW "
    "WHEN (NEW.encounter_id IS NOT NULL AND NEW.stay_department_id IS NULL) "
    "EXECUTE FUNCTION careloop_task_stay()",
    "CREATE TRIGGER tasks_stay_update BEFORE UPDATE OF encounter_id ON tasks FOR EACH ROW "
    "WHEN (OLD.encounter_id IS DISTINCT FROM NEW.encounter_id) "
    "EXECUTE FUNCTION careloop_task_stay()",
    "CREATE TRIGGER encounters_moved AFTER UPDATE OF department_id, ward_id ON encounters "
    "FOR EACH ROW WHEN (OLD.department_id IS DISTINCT FROM NEW.department_id "
    "OR OLD.ward_id IS DISTINCT FROM NEW.ward_id) EXECUTE FUNCTION careloop_stay_moved()",
)

_SQLITE_COPY = ("UPDATE tasks SET "
                "stay_department_id = (SELECT department_id FROM encounters "
                "WHERE id = NEW.encounter_id), "
                "stay_ward_id = (SELECT ward_id FROM encounters WHERE id = NEW.encounter_id) "
                "WHERE id = NEW.id; END")

_SQLITE = (
    "CREATE TRIGGER tasks_stay_insert AFTER INSERT ON tasks "
    "WHEN NEW.encounter_id IS NOT NULL AND NEW.stay_department_id IS NULL BEGIN " + _SQLITE_COPY,
    "CREATE TRIGGER tasks_stay_update AFTER UPDATE OF encounter_id ON tasks "
    "WHEN OLD.encounter_id IS NOT NEW.encounter_id BEGIN " + _SQLITE_COPY,
    "CREATE TRIGGER encounters_moved AFTER UPDATE OF department_id, ward_id ON encounters "
    "WHEN OLD.department_id IS NOT NEW.department_id OR OLD.ward_id IS NOT NEW.ward_id BEGIN "
    "UPDATE tasks SET stay_department_id = NEW.department_id, stay_ward_id = NEW.ward_id "
    "WHERE encounter_id = NEW.id; END",
)

TRIGGERS = (("tasks_stay_insert", "tasks"), ("tasks_stay_update", "tasks"),
            ("encounters_moved", "encounters"))

# the copy of the tasks already stored (the migration, once)
_BACKFILL = {
    "postgresql": "UPDATE tasks SET stay_department_id = e.department_id, stay_ward_id = e.ward_id "
                  "FROM encounters e WHERE e.id = tasks.encounter_id",
    "sqlite": "UPDATE tasks SET "
              "stay_department_id = (SELECT department_id FROM encounters e "
              "WHERE e.id = tasks.encounter_id), "
              "stay_ward_id = (SELECT ward_id FROM encounters e WHERE e.id = tasks.encounter_id) "
              "WHERE encounter_id IS NOT NULL",
}


def install(connection: Connection) -> None:
    """Copy every task's stay, then create the triggers that keep the copy (migration 0040)."""
    postgres = connection.dialect.name == "postgresql"
    if postgres:  # every stored task is rewritten once: minutes for millions, not a request
        connection.execute(text("SET LOCAL statement_timeout = 0"))
    connection.execute(text(_BACKFILL["postgresql" if postgres else "sqlite"]))
    for statement in _PG if postgres else _SQLITE:
        connection.execute(text(statement))


def remove(connection: Connection) -> None:
    """Drop the triggers (migration 0040's downgrade)."""
    postgres = connection.dialect.name == "postgresql"
    for name, table in TRIGGERS:
        connection.execute(text(f"DROP TRIGGER IF EXISTS {name}"
                                + (f" ON {table}" if postgres else "")))
    if postgres:
        connection.execute(text("DROP FUNCTION IF EXISTS careloop_task_stay()"))
        connection.execute(text("DROP FUNCTION IF EXISTS careloop_stay_moved()"))
