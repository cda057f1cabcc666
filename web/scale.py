"""Benchmark dataset at regional volume (issue 18, point 5): ``careloop demo seed --scale``.

**A benchmark dataset generator, not demo data.** Normal demo data goes through the public paths
(:mod:`careloop.web.demo`: HIS events, sweeps, answers); a region's million patients would take
days that way. This writes the rows the app reads straight into its tables — COPY
(``cursor.copy()``) on PostgreSQL, ``executemany`` in large batches on SQLite — so that the
inbox, patient search, patient 360 and dashboards can be measured at volume (``bench/scale.py``).

What it writes, deterministic for a seed (each chunk has its own seeded RNG):

* reference data through the admin functions the demo uses (departments, wards, demo staff with
  the demo password), and the shipped bundles when no form is imported yet;
* ``patients`` (ids ``SP…``, MRNs ``SM…``, locally generated Chinese names, phones, ID numbers),
  one discharged inpatient stay each in ``encounters`` (a department and ward, the ward's nurse
  and the department's doctor, diagnoses), ``patient_tags`` from the diagnoses;
* ``submissions`` of shipped forms (inpatient/outpatient satisfaction, discharge day 3) with
  their current version and content hash, answers, scores and bands, over the last year, and
  the numeric answers in ``submission_answers`` the dashboards aggregate;
* open ``tasks`` (phone follow-ups, call-backs) assigned to a user, to a ward's nurses or to a
  department's head nurse, due relative to the engine clock, a share overdue.

Two shapes: by default the demo hospital's five departments and seven wards hold everything (a
ward nurse's inbox holds 120,000 of a million open tasks: the worst case for one list);
``wards=N`` (``--wards 500``) spreads the same rows over a region — the demo's seven wards and
departments of two wards each up to ``N`` wards, specialties in the demo's proportions, each
department with its doctor and head nurse and each ward with its nurse (the demo staff and
password), so that one person's lists hold thousands, as in a region's hospitals.

On PostgreSQL the secondary indexes of the big tables are dropped during the load and built
again from their own definitions afterwards, foreign-key triggers are skipped for the load when
the user may (``session_replication_role``), and everything is analysed at the end.
The command refuses a database that holds patients it did not generate unless forced.
"""

from __future__ import annotations

import json
import random
import time
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select, text

from careloop.engine.clock import now_utc
from careloop.engine.db import default_engine, transaction
from careloop.engine.domain import User
from careloop.engine.models import DefinitionRow
from careloop.web.demo import DEPARTMENTS, _diagnoses, _id_number, _reference_data, chinese_name

PATIENT_PREFIX = "SP"
MRN_PREFIX = "SM"
ENCOUNTER_PREFIX = "SE"
#: rows per generated chunk (one RNG each) and per SQLite ``executemany``
CHUNK = 50_000
#: the shipped forms submissions are made of, with their share
FORMS = (("inpatient_satisfaction", 0.5), ("outpatient_satisfaction", 0.2),
         ("discharge_day3", 0.3))
BIG_TABLES = ("patients", "encounters", "patient_tags", "submissions", "submission_answers",
              "tasks")
HISTORY_DAYS = 365
TASK_KINDS = (("phone_followup", "出院随访电话", 0.7), ("callback", "不满意回访", 0.2),
              ("todo", "复诊提醒", 0.1))
COMMENTS = ("护士很耐心，谢谢！", "出院指导很清楚。", "等候时间太长。", "病房有点吵。",
            "医生解释得很详细。", "饭菜偏咸。", "")


class ScaleRefused(Exception):
    """The database holds data this generator did not write (or already holds its data)."""


@dataclass
class ScaleResult:
    written: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    dialect: str = ""


@dataclass(frozen=True, slots=True)
class Ward:
    """Where a patient stays: a specialty (index into the demo's ``DEPARTMENTS``: ages, stays,
    diagnoses), its department and the ward."""

    profile: int
    department: str
    ward: str


def demo_wards() -> tuple[Ward, ...]:
    """The demo hospital's seven wards (the default shape)."""
    return tuple(Ward(d, dept.code, ward) for d, dept in enumerate(DEPARTMENTS)
                 for ward in dept.wards)


def regional_wards(wards: int) -> tuple[Ward, ...]:
    """The demo's wards, then departments of two wards each (``r001_cardiology`` with
    ``r001_cardiology_w1`` and ``_w2``…) up to ``wards`` wards; the specialties of the new
    departments follow the demo's weights (largest remainder, then in turn)."""
    found = list(demo_wards())
    extra = max(0, wards - len(found))
    departments = (extra + 1) // 2
    weights = [d.weight for d in DEPARTMENTS]
    total = sum(weights)
    shares = [departments * w / total for w in weights]
    counts = [int(x) for x in shares]
    for d in sorted(range(len(weights)), key=lambda i: counts[i] - shares[i])[
            :departments - sum(counts)]:
        counts[d] += 1
    order = [d for k in range(max(counts, default=0)) for d in range(len(counts))
             if k < counts[d]]
    for k, d in enumerate(order, 1):
        code = f"r{k:03d}_{DEPARTMENTS[d].code}"
        for w in range(1, 3):
            if len(found) < wards:
                found.append(Ward(d, code, f"{code}_w{w}"))
    return tuple(found)


@dataclass(frozen=True, slots=True)
class Hospital:
    """Reference data the rows point at: departments and wards, staff ids, form versions."""

    now: datetime
    users: dict[str, int]
    forms: dict[str, tuple[int, str]]  # key -> (version, content hash)
    wards: tuple[Ward, ...] = field(default_factory=demo_wards)


# -- generation ---------------------------------------------------------------------------------


def _rng(seed: int, what: str, chunk: int) -> random.Random:
    return random.Random(f"{seed}:{what}:{chunk}")


def _chunks(total: int) -> Iterator[tuple[int, int, int]]:
    for n, start in enumerate(range(1, total + 1, CHUNK)):
        yield n, start, min(total + 1, start + CHUNK)


class Writer:
    """Rows out, per dialect: COPY on PostgreSQL, batched ``executemany`` on SQLite."""

    def __init__(self, raw: Any, dialect: str) -> None:
        self.raw, self.dialect = raw, dialect
        self.cur = raw.cursor()

    def ts(self, value: datetime) -> Any:
        if self.dialect == "postgresql":
            return value
        return f"{value.astimezone(UTC):%Y-%m-%d %H:%M:%S.%f}"

    def js(self, value: Any) -> str:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))

    def write(self, table: str, columns: tuple[str, ...],
              chunks: Iterator[list[tuple[Any, ...]]]) -> int:
        count = 0
        names = ", ".join(columns)
        if self.dialect == "postgresql":
            with self.cur.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                for rows in chunks:
                    for row in rows:
                        copy.write_row(row)
                    count += len(rows)
        else:
            marks = ", ".join("?" * len(columns))
            for rows in chunks:
                self.cur.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", rows)
                count += len(rows)
        self.raw.commit()
        return count


@dataclass
class Layout:
    """Per patient, what later rows need (compact arrays: a million patients fit easily)."""

    dept: bytearray  # the specialty (index into DEPARTMENTS)
    ward: array  # type: ignore[type-arg]  # index into Hospital.wards
    discharged: array  # type: ignore[type-arg]  # epoch seconds


PATIENT_COLUMNS = ("id", "mrn", "name", "gender", "birth_date", "phone", "id_number", "locale",
                   "attributes", "consents", "created_at", "updated_at")
ENCOUNTER_COLUMNS = ("id", "patient_id", "type", "department_id", "ward_id",
                     "attending_doctor_id", "responsible_nurse_id", "status", "admitted_at",
                     "discharged_at", "diagnoses", "procedures", "created_at")
#: rows held before they are written (bounded memory at any scale)
BATCH = 500_000


def _patients(w: Writer, h: Hospital, n: int, seed: int, result: ScaleResult) -> Layout:
    layout = Layout(bytearray(n + 1), array("H", bytes(2 * (n + 1))),
                    array("d", bytes(8 * (n + 1))))
    weights = [d.weight for d in DEPARTMENTS]
    places = [[k for k, w in enumerate(h.wards) if w.profile == d]
              for d in range(len(DEPARTMENTS))]
    now = h.now
    epoch_now = now.timestamp()
    people: list[tuple[Any, ...]] = []
    stays: list[tuple[Any, ...]] = []
    tagged: list[tuple[Any, ...]] = []
    for table in ("patients", "encounters", "patient_tags"):
        result.written[table] = 0

    def flush() -> None:
        result.written["patients"] += w.write("patients", PATIENT_COLUMNS, iter([people]))
        result.written["encounters"] += w.write("encounters", ENCOUNTER_COLUMNS, iter([stays]))
        result.written["patient_tags"] += w.write(
            "patient_tags", ("patient_id", "tag", "source", "created_at"), iter([tagged]))
        people.clear()
        stays.clear()
        tagged.clear()

    started = time.perf_counter()
    for chunk, first, stop in _chunks(n):
        rng = _rng(seed, "patients", chunk)
        for i in range(first, stop):
            d = rng.choices(range(len(DEPARTMENTS)), weights)[0]
            dept = DEPARTMENTS[d]
            female = rng.random() < dept.female
            age = rng.randint(*dept.ages)
            birth = date(now.year - age, rng.randint(1, 12), rng.randint(1, 28))
            place = places[d][rng.randrange(len(places[d]))]
            discharged = epoch_now - rng.random() * HISTORY_DAYS * 86400
            layout.dept[i], layout.ward[i], layout.discharged[i] = d, place, discharged
            at = datetime.fromtimestamp(discharged, UTC).replace(microsecond=0)
            admitted = at - timedelta(days=rng.randint(*dept.stay))
            pid = f"{PATIENT_PREFIX}{i:08d}"
            people.append((pid, f"{MRN_PREFIX}{i:08d}",
                           chinese_name(rng, "female" if female else "male"),
                           "female" if female else "male", birth,
                           f"1{rng.choice('3589')}{rng.randrange(10**9):09d}",
                           _id_number(rng, birth, female), "zh-CN",
                           '{"generated":"scale"}', '{"sms":true}', w.ts(admitted), w.ts(at)))
            dx, procedures, tag_list = _diagnoses(rng, dept.code)
            if age >= 70:
                tag_list.append("aged_70_plus")
            stay = h.wards[place]
            ward_id = stay.ward
            stays.append((f"{ENCOUNTER_PREFIX}{i:08d}", pid, "inpatient", stay.department,
                          ward_id, h.users.get(f"{stay.department}_doctor"),
                          h.users.get(f"{ward_id}_nurse"),
                          "discharged", w.ts(admitted), w.ts(at), w.js({"codes": dx}),
                          w.js({"codes": procedures}), w.ts(admitted)))
            tagged.extend((pid, tag, "scale", w.ts(at)) for tag in tag_list)
        if len(people) >= BATCH:
            flush()
    flush()
    result.seconds["patients"] = time.perf_counter() - started
    return layout


def _submissions(w: Writer, h: Hospital, layout: Layout, n_patients: int, n: int, seed: int,
                 first_id: int, result: ScaleResult) -> None:
    forms = [(key, share) for key, share in FORMS if key in h.forms]
    if not forms:
        raise ScaleRefused("no shipped form is imported (satisfaction, discharge)")
    keys = [k for k, _ in forms]
    shares = [s for _, s in forms]
    answers: list[tuple[Any, ...]] = []
    epoch_now = h.now.timestamp()

    def submissions() -> Iterator[list[tuple[Any, ...]]]:
        for chunk, first, stop in _chunks(n):
            rng = _rng(seed, "submissions", chunk)
            rows = []
            for j in range(first, stop):
                sid = first_id + j - 1
                p = rng.randint(1, n_patients)
                department = h.wards[layout.ward[p]].department
                quality = (layout.dept[p] - 2) * 0.15
                key = rng.choices(keys, shares)[0]
                version, content_hash = h.forms[key]
                overall = max(1, min(5, round(rng.gauss(4.1 + quality, 0.9))))
                values: dict[str, Any] = {"overall": overall}
                scores: dict[str, Any] = {"csat_top_box": 1.0 if overall >= 4 else 0.0}
                bands: dict[str, Any] = {}
                numbers = [("overall", float(overall))]
                if key == "discharge_day3":
                    values["recovery"] = rng.choices(("good", "fair", "poor"), (7, 2, 1))[0]
                    values["medication_clear"] = "yes" if rng.random() < 0.85 else "no"
                else:
                    nps = max(0, min(10, round(rng.gauss(8.0 + quality * 2, 2.0))))
                    values["nps"] = nps
                    scores["nps_category"] = nps
                    bands["nps_category"] = ("promoter" if nps >= 9 else
                                             "passive" if nps >= 7 else "detractor")
                    numbers.append(("nps", float(nps)))
                comment = rng.choice(COMMENTS)
                if comment:
                    values["comment"] = comment
                # answered within weeks of the stay (an outpatient visit: any time after)
                at = min(epoch_now, layout.discharged[p] + rng.random() * 30 * 86400)
                rows.append((sid, key, version, content_hash, f"{PATIENT_PREFIX}{p:08d}",
                             f"{ENCOUNTER_PREFIX}{p:08d}", department,
                             rng.choice(("sms", "wechat", "sms", "web")), "zh-CN", "received",
                             w.js(values), w.js(scores), w.js(bands),
                             w.ts(datetime.fromtimestamp(at, UTC))))
                answers.extend((sid, key, f, None, v) for f, v in numbers)
            yield rows

    started = time.perf_counter()
    columns = ("id", "form_key", "form_version", "content_hash", "patient_id", "encounter_id",
               "department_id", "channel", "locale", "status", "answers", "scores", "bands",
               "submitted_at")
    written = total_answers = 0
    batch: list[list[tuple[Any, ...]]] = []
    for rows in submissions():  # submissions, then their answers, per batch (bounded memory)
        batch.append(rows)
        if len(batch) * CHUNK >= BATCH * 2:
            written += w.write("submissions", columns, iter(batch))
            total_answers += w.write("submission_answers", ("submission_id", "form_key",
                                                            "field_key", "row_key",
                                                            "value_number"), iter([answers]))
            batch.clear()
            answers.clear()
    if batch:
        written += w.write("submissions", columns, iter(batch))
        total_answers += w.write("submission_answers", ("submission_id", "form_key", "field_key",
                                                        "row_key", "value_number"),
                                 iter([answers]))
    result.written["submissions"] = written
    result.written["submission_answers"] = total_answers
    result.seconds["submissions"] = time.perf_counter() - started


def _tasks(w: Writer, h: Hospital, layout: Layout, n_patients: int, n: int, seed: int,
           result: ScaleResult) -> None:
    now = h.now
    kinds = [k for k, _t, _s in TASK_KINDS]
    titles = {k: t for k, t, _s in TASK_KINDS}
    shares = [s for _k, _t, s in TASK_KINDS]

    def tasks() -> Iterator[list[tuple[Any, ...]]]:
        for chunk, first, stop in _chunks(n):
            rng = _rng(seed, "tasks", chunk)
            rows = []
            for k in range(first, stop):
                p = rng.randint(1, n_patients)
                stay = h.wards[layout.ward[p]]
                dept, ward = stay.department, stay.ward
                kind = rng.choices(kinds, shares)[0]
                roll = rng.random()
                if roll < 0.25:  # one nurse's own call list
                    department, role, user = ward, "nurse", h.users.get(f"{ward}_nurse")
                elif roll < 0.75:  # the ward's nurses' queue
                    department, role, user = ward, "nurse", None
                elif roll < 0.9:  # the department's head nurse
                    department, role, user = dept, "head_nurse", None
                else:  # the doctor's
                    department, role, user = dept, "doctor", h.users.get(f"{dept}_doctor")
                # due from three days ago to nine days ahead: about a quarter overdue
                due = now + timedelta(minutes=rng.randint(-3 * 1440, 9 * 1440))
                created = due - timedelta(hours=rng.randint(24, 96))
                priority = rng.choices(("urgent", "high", "normal", "low"), (2, 10, 80, 8))[0]
                rows.append((titles[kind], kind, f"{PATIENT_PREFIX}{p:08d}",
                             f"{ENCOUNTER_PREFIX}{p:08d}", dept, ward, department, user, role,
                             priority, "in_progress" if rng.random() < 0.08 else "open", w.ts(due),
                             '{"chain":[],"level":0}', "rule", f"scale:{seed}:{k}",
                             "discharge_day3" if kind == "phone_followup" else None, "{}",
                             w.ts(created)))
            yield rows

    started = time.perf_counter()
    result.written["tasks"] = w.write(
        # the stay's department and ward given (engine/task_stay.py's triggers do not run
        # under session_replication_role = replica, nor are they needed when given)
        "tasks", ("title", "kind", "patient_id", "encounter_id", "stay_department_id",
                  "stay_ward_id", "department_id", "assignee_user_id", "assignee_role",
                  "priority", "status", "due_at", "escalation", "source_type", "source_ref",
                  "form_key", "details", "created_at"), tasks())
    result.seconds["tasks"] = time.perf_counter() - started


# -- the database side ------------------------------------------------------------------------


def check_target(engine: Engine, force: bool) -> None:
    """Refuse a database holding generated rows already, or (unless ``force``) real patients."""
    with engine.connect() as conn:
        mine = conn.scalar(text("SELECT count(*) FROM patients WHERE id LIKE :p"),
                           {"p": f"{PATIENT_PREFIX}%"}) or 0
        others = conn.scalar(text("SELECT count(*) FROM patients WHERE id NOT LIKE :p"),
                             {"p": f"{PATIENT_PREFIX}%"}) or 0
    if mine:
        raise ScaleRefused(f"the database already holds {mine:,} generated patients; "
                           "seed an empty database")
    if others and not force:
        raise ScaleRefused(f"the database holds {others:,} patients this generator did not "
                           "write; use a database of its own (or --force)")


def _regional_staff(session: Any, wards: tuple[Ward, ...]) -> None:
    """The regional departments and wards beyond the demo's, with a doctor and a head nurse per
    department and a nurse per ward (the admin functions, the demo password)."""
    from careloop.engine.domain import Department
    from careloop.web import admin
    from careloop.web.demo import DEMO_PASSWORD
    from careloop.web.passwords import hash_password

    hashed = hash_password(DEMO_PASSWORD)
    known = set(session.scalars(select(Department.id)).all())
    names = set(session.scalars(select(User.username)).all())

    def add(username: str, display: str, role: str, department: str) -> None:
        if username in names:
            return
        user = admin.create_user(session, username=username, display_name=display,
                                 password=DEMO_PASSWORD, check=False, password_hash=hashed)
        admin.grant(session, user, role, department)

    for w in wards:
        profile = DEPARTMENTS[w.profile]
        number = w.department.split("_", 1)[0]
        if w.department not in known:
            admin.create_department(session, id=w.department, name_zh=f"{number} {profile.zh}",
                                    name_en=f"{number} {profile.en}", parent_id=None)
            known.add(w.department)
            add(f"{w.department}_doctor", f"{number}{profile.zh}医生", "doctor", w.department)
            add(f"{w.department}_head_nurse", f"{number}{profile.zh}护士长", "head_nurse",
                w.department)
        if w.ward not in known:
            suffix = w.ward.rsplit("_w", 1)[-1]
            admin.create_department(session, id=w.ward,
                                    name_zh=f"{number} {profile.zh}{suffix}病区",
                                    name_en=f"{number} {profile.en} ward {suffix}",
                                    parent_id=w.department)
            known.add(w.ward)
            add(f"{w.ward}_nurse", f"{number}{profile.zh}{suffix}病区护士", "nurse", w.ward)


def _hospital(engine: Engine, now: datetime, wards: tuple[Ward, ...] | None = None) -> Hospital:
    """Departments, wards and demo staff (the admin functions); the shipped bundles when no
    satisfaction or discharge form is imported yet."""
    from careloop.engine.bundles import import_bundles, list_bundles

    with transaction(engine) as session:
        have = session.scalars(select(DefinitionRow.key).where(
            DefinitionRow.kind == "form",
            DefinitionRow.key.in_([k for k, _ in FORMS]))).all()
    if not have:
        import_bundles(list_bundles([Path(__file__).resolve().parents[1] / "app_definitions"]),
                       engine=engine, actor="demo seed --scale")
    context: dict[str, Any] = {}
    places = wards or demo_wards()
    with transaction(engine) as session:
        _reference_data(session, context)
        _regional_staff(session, tuple(w for w in places if w not in demo_wards()))
        users = {u.username: u.id for u in session.scalars(select(User)).all()}
        forms: dict[str, tuple[int, str]] = {}
        for row in session.scalars(select(DefinitionRow).where(
                DefinitionRow.kind == "form", DefinitionRow.retired_at.is_(None),
                DefinitionRow.key.in_([k for k, _ in FORMS]))
                .order_by(DefinitionRow.version)).all():
            forms[row.key] = (row.version, row.content_hash)
    return Hospital(now=now, users=users, forms=forms, wards=places)


def _secondary_indexes(conn: Any) -> list[tuple[str, str]]:
    """PostgreSQL: the big tables' indexes that back no constraint, with their definitions."""
    cur = conn.cursor()
    cur.execute("""SELECT i.indexname, i.indexdef FROM pg_indexes i
                   WHERE i.schemaname = current_schema() AND i.tablename = ANY(%s)
                     AND NOT EXISTS (SELECT 1 FROM pg_constraint c
                                     WHERE c.conname = i.indexname)""", (list(BIG_TABLES),))
    return [(name, definition) for name, definition in cur.fetchall()]


def _no_timeouts(cur: Any) -> None:
    """A load generates rows between statements for minutes: no statement or idle limits."""
    for setting in ("statement_timeout", "idle_in_transaction_session_timeout", "lock_timeout"):
        cur.execute(f"SET {setting} = 0")
    cur.execute("SET maintenance_work_mem = '256MB'")


def _restore_indexes(engine: Engine, indexes: list[tuple[str, str]]) -> None:
    """After a failed load: the dropped indexes back (those still missing)."""
    with engine.begin() as conn:
        conn.exec_driver_sql("SET LOCAL statement_timeout = 0")
        for _name, definition in indexes:
            conn.exec_driver_sql(definition.replace("CREATE INDEX ",
                                                    "CREATE INDEX IF NOT EXISTS ", 1))


def seed_scale(*, patients: int = 1_000_000, submissions: int = 10_000_000,
               tasks: int = 1_000_000, seed_value: int = 20261207, force: bool = False,
               engine: Engine | None = None, now: datetime | None = None,
               wards: int | None = None,
               say: Callable[[str], None] = lambda line: None) -> ScaleResult:
    """Write a benchmark dataset (see the module docstring): the demo hospital's seven wards,
    or ``wards`` wards over a region. Raises :class:`ScaleRefused`."""
    engine = engine or default_engine()
    check_target(engine, force)
    result = ScaleResult(dialect=engine.dialect.name)
    started = time.perf_counter()
    h = _hospital(engine, (now or now_utc()).replace(microsecond=0),
                  regional_wards(wards) if wards else None)
    say(f"reference data ready ({len(h.users)} staff, {len(h.wards)} wards, "
        f"forms {', '.join(sorted(h.forms))})")
    raw = engine.raw_connection()
    postgres = engine.dialect.name == "postgresql"
    indexes: list[tuple[str, str]] = []
    try:
        dbapi = raw.driver_connection
        assert dbapi is not None
        cur = dbapi.cursor()
        if postgres:
            _no_timeouts(cur)
            try:
                cur.execute("SET session_replication_role = replica")  # no per-row FK checks
            except Exception:  # not a superuser: the checks run
                dbapi.rollback()
                _no_timeouts(cur)
            indexes = _secondary_indexes(dbapi)
            for name, _definition in indexes:
                cur.execute(f'DROP INDEX "{name}"')
            dbapi.commit()
        else:
            cur.execute("PRAGMA foreign_keys = OFF")
        cur.execute("SELECT max(id) FROM submissions")
        first_submission = int(cur.fetchone()[0] or 0) + 1
        w = Writer(dbapi, engine.dialect.name)
        layout = _patients(w, h, patients, seed_value, result)
        say(f"patients {result.written['patients']:,}, stays {result.written['encounters']:,},"
            f" tags {result.written['patient_tags']:,} "
            f"({result.seconds['patients']:.0f} s)")
        if submissions:
            _submissions(w, h, layout, patients, submissions, seed_value, first_submission,
                         result)
            say(f"submissions {result.written['submissions']:,}, numeric answers "
                f"{result.written['submission_answers']:,} "
                f"({result.seconds['submissions']:.0f} s)")
        if tasks:
            _tasks(w, h, layout, patients, tasks, seed_value, result)
            say(f"open tasks {result.written['tasks']:,} ({result.seconds['tasks']:.0f} s)")
        finish = time.perf_counter()
        if postgres:
            cur.execute("SELECT setval(pg_get_serial_sequence('submissions', 'id'), "
                        "(SELECT max(id) FROM submissions))")
            for _name, definition in indexes:
                cur.execute(definition)
                dbapi.commit()
            cur.execute("SET session_replication_role = DEFAULT")
            dbapi.commit()
            dbapi.autocommit = True
            cur.execute("ANALYZE")
            dbapi.autocommit = False
        else:
            cur.execute("PRAGMA foreign_keys = ON")
            cur.execute("ANALYZE")
            dbapi.commit()
        result.seconds["indexes_analyze"] = time.perf_counter() - finish
        say(f"indexes {len(indexes)} rebuilt, analysed "
            f"({result.seconds['indexes_analyze']:.0f} s)" if postgres else
            f"analysed ({result.seconds['indexes_analyze']:.0f} s)")
    except BaseException:
        if indexes:
            _restore_indexes(engine, indexes)
        raise
    finally:
        raw.invalidate()  # its session settings (no timeouts, replica role) go with it
    result.seconds["total"] = time.perf_counter() - started
    return result
