"""Benchmark of the report engine: the overview dashboard's datasets at scale.

Generates N satisfaction submissions (40 departments, 300 doctors, 24 months, skewed scores)
into a fresh SQLite file and, when ``CARELOOP_BENCH_POSTGRES`` (or ``--postgres URL``) names one,
a fresh PostgreSQL schema; then times, in the same run and on the same data:

* engine   — the report engine's compiled queries (no cache)
* hand     — hand-written SQL doing the same aggregations on the same database
* duckdb   — the same aggregations in DuckDB over the same rows (loaded in memory first)
* pandas   — the same aggregations with pandas
* filter   — a filter change (one department) through the engine, uncached
* cached   — the same filter again, answered from the database cache

and prints ratios (``--json`` for one machine-readable line). ``--quick`` is a tiny smoke run.

    python bench/reports.py --rows 200000
    python bench/reports.py --quick --json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import Engine, text

from careloop.engine.db import make_engine, transaction
from careloop.engine.models import load_all_models
from careloop.reports.compiler import dataset_from_body
from careloop.reports.query import Filters, run_dataset
from careloop.reports.runtime import run_cached
from careloop.reports.spec import DatasetSpec

ROOT = Path(__file__).resolve().parent.parent
OVERVIEW = ("satisfaction_by_department", "satisfaction_trend_month",
            "satisfaction_trend_quarter", "satisfaction_kpis")
TABLES = ("departments", "users", "patients", "encounters", "submissions", "submission_answers",
          "report_cache", "definitions", "bundles")
START = datetime(2024, 11, 1, tzinfo=UTC)


def overview_specs() -> list[DatasetSpec]:
    folder = ROOT / "app_definitions" / "satisfaction" / "reports"
    specs = []
    for key in OVERVIEW:
        body = yaml.safe_load((folder / f"{key}.yaml").read_text("utf-8"))
        specs.append(dataset_from_body(key, body, content_hash=key))
    return specs


# ---- data -------------------------------------------------------------------------------------

def generate(n: int, seed: int = 7) -> dict[str, list[tuple[Any, ...]]]:
    rng = random.Random(seed)
    depts = [f"d{i:02d}" for i in range(40)]
    quality = {d: rng.uniform(-0.8, 0.8) for d in depts}  # some departments do better
    doctors = list(range(1, 301))
    n_pat = max(1, n // 2)
    patients = [(f"p{i}", f"m{i}", "x", "zh-CN", "{}", "{}", START, START) for i in range(n_pat)]
    encounters = []
    for i in range(n_pat):
        dept = depts[min(39, int(rng.paretovariate(1.2)) - 1)]  # a few big departments
        encounters.append((f"e{i}", f"p{i}", "inpatient", dept, rng.choice(doctors),
                           "discharged", "{}", "{}", START))
    subs, answers = [], []
    span = 24 * 30 * 86400
    for sid in range(1, n + 1):
        p = rng.randrange(n_pat)
        dept = encounters[p][3]
        at = START + timedelta(seconds=rng.randrange(span))
        form = "inpatient_satisfaction" if rng.random() < 0.7 else "outpatient_satisfaction"
        q = quality[dept]
        nps = max(0, min(10, round(rng.gauss(7.8 + q * 2, 2.2))))
        overall = max(1, min(5, round(rng.gauss(4.0 + q, 0.9))))
        subs.append((sid, form, 1, "h", f"p{p}", f"e{p}", dept, "web", "zh-CN", "received",
                     "{}", "{}", "{}", at))
        answers.append((sid, form, "nps", None, float(nps)))
        answers.append((sid, form, "overall", None, float(overall)))
    return {"departments": [(d, json.dumps({"en": d}), "department", True) for d in depts],
            "users": [(u, f"dr{u}", f"Dr {u}", "zh-CN", True, START) for u in doctors],
            "patients": patients, "encounters": encounters, "submissions": subs,
            "submission_answers": answers}


COLUMNS = {
    "departments": "id, name, kind, active",
    "users": "id, username, display_name, locale, active, created_at",
    "patients": "id, mrn, name, locale, attributes, consents, created_at, updated_at",
    "encounters": "id, patient_id, type, department_id, attending_doctor_id, status, diagnoses, "
                  "procedures, created_at",
    "submissions": "id, form_key, form_version, content_hash, patient_id, encounter_id, "
                   "department_id, channel, locale, status, answers, scores, bands, submitted_at",
    "submission_answers": "submission_id, form_key, field_key, row_key, value_number",
}


def load(engine: Engine, data: dict[str, list[tuple[Any, ...]]]) -> None:
    meta = load_all_models()
    meta.create_all(engine, tables=[meta.tables[t] for t in TABLES])
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        for name, rows in data.items():
            cols = COLUMNS[name]
            if engine.dialect.name == "postgresql":
                with cur.copy(f"COPY {name} ({cols}) FROM STDIN") as copy:  # type: ignore[attr-defined]
                    for row in rows:
                        copy.write_row(row)
            else:
                marks = ", ".join("?" * len(cols.split(",")))
                rows = [tuple(v.replace(tzinfo=None) if isinstance(v, datetime) else v
                              for v in r) for r in rows]
                cur.executemany(f"INSERT INTO {name} ({cols}) VALUES ({marks})", rows)
        raw.commit()
        cur.execute("ANALYZE")
        raw.commit()
    finally:
        raw.close()


# ---- the contenders ---------------------------------------------------------------------------

def hand_sql(dialect: str) -> list[str]:
    if dialect == "postgresql":
        month = "to_char(s.submitted_at AT TIME ZONE 'Asia/Shanghai', 'YYYY-MM')"
        quarter = "to_char(s.submitted_at AT TIME ZONE 'Asia/Shanghai', 'YYYY-\"Q\"Q')"
    else:
        month = "strftime('%Y-%m', s.submitted_at, '+480 minutes')"
        quarter = ("printf('%s-Q%d', strftime('%Y', s.submitted_at, '+480 minutes'), "
                   "(CAST(strftime('%m', s.submitted_at, '+480 minutes') AS INTEGER) + 2) / 3)")
    return [q.format(month=month, quarter=quarter) for q in _HAND]


_FROM = ("FROM submissions s LEFT JOIN submission_answers a ON a.submission_id = s.id "
         "AND a.field_key IN ('nps', 'overall') "
         "WHERE s.form_key IN ('inpatient_satisfaction', 'outpatient_satisfaction')")
_NPS = ("CASE WHEN COUNT(CASE WHEN a.field_key = 'nps' THEN 1 END) >= {n} THEN 100.0 * "
        "(SUM(CASE WHEN a.field_key = 'nps' AND a.value_number >= 9 THEN 1 ELSE 0 END) - "
        "SUM(CASE WHEN a.field_key = 'nps' AND a.value_number <= 6 THEN 1 ELSE 0 END)) / "
        "COUNT(CASE WHEN a.field_key = 'nps' THEN 1 END) END")
_AVG = "AVG(CASE WHEN a.field_key = 'overall' THEN a.value_number END)"
_BOX = ("100.0 * SUM(CASE WHEN a.field_key = 'overall' AND a.value_number {op} THEN 1 ELSE 0 END)"
        " / COUNT(CASE WHEN a.field_key = 'overall' THEN 1 END)")
_HAND = [
    f"SELECT s.department_id, COUNT(DISTINCT s.id), {_AVG}, {_NPS.format(n=5)}, "
    f"{_BOX.format(op='>= 4')}, {_BOX.format(op='<= 2')} {_FROM} "
    "GROUP BY s.department_id ORDER BY s.department_id",
    f"SELECT {{month}} AS m, {_AVG}, {_NPS.format(n=5)} {_FROM} GROUP BY m ORDER BY m",
    f"SELECT {{quarter}} AS q, s.department_id, {_AVG}, {_NPS.format(n=5)} {_FROM} "
    "GROUP BY q, s.department_id ORDER BY q, s.department_id",
    f"SELECT {_NPS.format(n=5)}, 100.0 * SUM(CASE WHEN a.field_key = 'overall' AND "
    "a.value_number >= 4 THEN 1 ELSE 0 END) / COUNT(CASE WHEN a.field_key = 'overall' THEN 1 "
    f"END), COUNT(DISTINCT s.id) {_FROM}",
]


def _timed(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_database(engine: Engine, specs: list[DatasetSpec], repeat: int) -> dict[str, Any]:
    dialect = engine.dialect.name
    hand = hand_sql(dialect)

    def run_engine() -> list[Any]:
        with engine.connect() as conn:
            return [run_dataset(conn, s, scope=None).rows for s in specs]

    def run_hand() -> list[Any]:
        with engine.connect() as conn:
            return [conn.execute(text(q)).all() for q in hand]

    one_dept = Filters(departments=("d03",))

    def run_filter() -> None:
        with engine.connect() as conn:
            for s in specs:
                run_dataset(conn, s, filters=one_dept, scope=None)

    def run_cached_filter() -> None:
        with transaction(engine) as session:
            for s in specs:
                run_cached(session, s, filters=one_dept, scope=None)

    _check_same(run_engine(), run_hand())
    run_cached_filter()  # warm the cache once
    return {"engine": _timed(run_engine, repeat), "hand": _timed(run_hand, repeat),
            "filter": _timed(run_filter, repeat), "cached": _timed(run_cached_filter, repeat)}


def _check_same(engine_rows: list[Any], hand_rows: list[Any]) -> None:
    for mine, theirs in zip(engine_rows, hand_rows, strict=True):
        a = [tuple(r.values()) for r in mine]
        b = [tuple(r) for r in theirs]
        if len(a) != len(b) or any(
                (x is None) != (y is None) or (x is not None and isinstance(x, float)
                                               and abs(x - float(y)) > 1e-6)
                for ra, rb in zip(a, b, strict=True) for x, y in zip(ra, rb, strict=True)):
            raise SystemExit("engine and hand-written SQL disagree — benchmark aborted")


def bench_duckdb_pandas(data: dict[str, list[tuple[Any, ...]]], repeat: int) -> dict[str, float]:
    import duckdb
    import pandas as pd

    subs = pd.DataFrame([(r[0], r[1], r[6], r[13].replace(tzinfo=None))
                         for r in data["submissions"]],
                        columns=["id", "form_key", "department_id", "submitted_at"])
    ans = pd.DataFrame([(r[0], r[2], r[4]) for r in data["submission_answers"]],
                       columns=["submission_id", "field_key", "value_number"])
    con = duckdb.connect()
    con.register("subs_df", subs)
    con.register("ans_df", ans)
    con.execute("CREATE TABLE submissions AS SELECT * FROM subs_df")
    con.execute("CREATE TABLE submission_answers AS SELECT * FROM ans_df")
    month = "strftime(s.submitted_at + INTERVAL 8 HOUR, '%Y-%m')"
    quarter = ("strftime(s.submitted_at + INTERVAL 8 HOUR, '%Y') || '-Q' || "
               "CAST(quarter(s.submitted_at + INTERVAL 8 HOUR) AS VARCHAR)")
    queries = [q.format(month=month, quarter=quarter) for q in _HAND]

    def run_duck() -> None:
        for q in queries:
            con.execute(q).fetchall()

    def run_pandas() -> None:
        df = subs.merge(ans, left_on="id", right_on="submission_id")
        local = df["submitted_at"] + pd.Timedelta(hours=8)
        df = df.assign(month=local.dt.strftime("%Y-%m"),
                       quarter=local.dt.year.astype(str) + "-Q" + local.dt.quarter.astype(str),
                       nps=df["value_number"].where(df["field_key"] == "nps"),
                       overall=df["value_number"].where(df["field_key"] == "overall"))
        df = df.assign(pro=(df["nps"] >= 9).astype(int), det=(df["nps"] <= 6).astype(int),
                       top=(df["overall"] >= 4).astype(int), low=(df["overall"] <= 2).astype(int))
        for keys in (["department_id"], ["month"], ["quarter", "department_id"]):
            g = df.groupby(keys)
            _ = (g["id"].nunique(), g["overall"].mean(),
                 100 * (g["pro"].sum() - g["det"].sum()) / g["nps"].count(),
                 100 * g["top"].sum() / g["overall"].count())
        _ = 100 * (df["pro"].sum() - df["det"].sum()) / df["nps"].count()

    return {"duckdb": _timed(run_duck, repeat), "pandas": _timed(run_pandas, repeat)}


# ---- main -------------------------------------------------------------------------------------

def _postgres(url: str) -> tuple[Engine, Callable[[], None]]:
    schema = f"bench_reports_{secrets.token_hex(4)}"
    admin = make_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = make_engine(url, connect_args={"options": f"-csearch_path={schema}"})

    def drop() -> None:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
    return engine, drop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="tiny data set (smoke test)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--postgres", default=os.environ.get("CARELOOP_BENCH_POSTGRES"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows = 300 if args.quick else args.rows
    repeat = 1 if args.quick else args.repeat
    t0 = time.perf_counter()
    data = generate(rows)
    specs = overview_specs()
    results: dict[str, Any] = {"rows": rows, "answers": len(data["submission_answers"])}
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = make_engine(f"sqlite:///{tmp}/bench.db")
        load(sqlite, data)
        results["sqlite"] = bench_database(sqlite, specs, repeat)
        sqlite.dispose()
    if args.postgres:
        pg, drop = _postgres(args.postgres)
        try:
            load(pg, data)
            results["postgresql"] = bench_database(pg, specs, repeat)
        finally:
            drop()
    results.update(bench_duckdb_pandas(data, repeat))
    for db in ("sqlite", "postgresql"):
        r = results.get(db)
        if r:
            r["engine_vs_hand"] = r["engine"] / r["hand"]
            r["engine_vs_duckdb"] = r["engine"] / results["duckdb"]
            r["engine_vs_pandas"] = r["engine"] / results["pandas"]
            r["filter_vs_duckdb"] = r["filter"] / results["duckdb"]
            r["cached_vs_duckdb"] = r["cached"] / results["duckdb"]
    results["total_seconds"] = time.perf_counter() - t0
    if args.json:
        print(json.dumps(results, sort_keys=True))
    else:
        _print(results)
    return 0


def _print(r: dict[str, Any]) -> None:
    print(f"overview dashboard ({len(OVERVIEW)} datasets), {r['rows']:,} submissions, "
          f"{r['answers']:,} answer rows")
    print(f"  duckdb {r['duckdb'] * 1000:9.1f} ms   pandas {r['pandas'] * 1000:9.1f} ms")
    for db in ("sqlite", "postgresql"):
        x = r.get(db)
        if not x:
            continue
        print(f"  {db:10} engine {x['engine'] * 1000:9.1f} ms  hand SQL {x['hand'] * 1000:9.1f} ms"
              f"  filter {x['filter'] * 1000:8.1f} ms  cached {x['cached'] * 1000:7.1f} ms")
        print(f"  {'':10} engine/hand {x['engine_vs_hand']:.2f}x  engine/duckdb "
              f"{x['engine_vs_duckdb']:.2f}x  engine/pandas {x['engine_vs_pandas']:.2f}x  "
              f"filter/duckdb {x['filter_vs_duckdb']:.2f}x  cached/duckdb "
              f"{x['cached_vs_duckdb']:.3f}x")


if __name__ == "__main__":
    sys.exit(main())
