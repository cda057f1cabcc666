"""Patient import benchmark, its peer measured in the same run.

A workbook of N patients (5 % dirty rows: a wrong ID checksum, a bad phone, an unreadable date,
another person under an earlier MRN; 1.25 % repeating the row before, merged) is read and
checked (the dry run), applied (500 patients a batch through the events path: validation, the
patient rows, one ``patient.upserted`` event each dispatched to every handler, fingerprints) and
applied again (nothing changes). The peer is a bare bulk insert of the same cleaned patients into
the same ``patients`` table (SQLAlchemy Core ``insert``, 500 rows a transaction): what writing the
rows costs with no validation, events or handlers.

    python bench/import_patients.py [--rows 10000] [--apps] [--pg postgresql+psycopg://…/test]
        [--json]

``--apps`` imports every bundle in ``app_definitions/`` first, as ``careloop up`` does, so the
shipped rule sets and flows that react to ``patient.upserted`` run for each patient.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, delete, insert

ROOT = Path(__file__).resolve().parent.parent
HEADERS = ["姓名", "住院号", "身份证号", "手机号", "性别", "出生日期", "科室", "出院日期"]


def _id_number(n: int, born: date, male: bool) -> str:
    from stdnum.cn import ric

    body = f"110105{born:%Y%m%d}{(n % 499) * 2 + (1 if male else 0):03d}"
    return body + str(ric.calc_check_digit(body + "0"))


def workbook(count: int) -> bytes:
    """The test's kind of export: mixed date forms, phones with +86, 5 % dirty rows."""
    from openpyxl import Workbook

    book = Workbook(write_only=True)
    sheet = book.create_sheet("患者")
    sheet.append(HEADERS)
    previous: list[Any] = []
    for n in range(count):
        born = date(1940, 1, 1) + timedelta(days=(n * 37) % 25000)
        male = n % 2 == 0
        phone = f"13{n % 10}{n:08d}"[:11]
        forms: tuple[Any, ...] = (born.isoformat(), f"{born.year}/{born.month}/{born.day}",
                                  f"{born.year}年{born.month}月{born.day}日", f"{born:%Y%m%d}",
                                  datetime(born.year, born.month, born.day))
        row: list[Any] = [f"患者{n}", f"ZY{n:06d}", _id_number(n, born, male),
                          phone if n % 7 else f"+86 {phone[:3]}-{phone[3:7]}-{phone[7:]}",
                          "男" if male else "女", forms[n % len(forms)], "心内科",
                          45356 + n % 300]
        kind = n % 80 if n >= 10 else -1
        if kind == 11:
            row[2] = row[2][:-1] + ("0" if row[2][-1] != "0" else "1")
        elif kind == 23:
            row[3] = "1234567"
        elif kind == 37:
            row[7] = "三月五日"
        elif kind == 53:
            row[1] = f"ZY{n - 5:06d}"
        elif kind == 67:
            row[0:3], row[4:6] = previous[0:3], previous[4:6]
        sheet.append(row)
        previous = row
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def _engine(url: str | None, folder: Path, name: str) -> tuple[Engine, str | None]:
    from careloop.engine.db import make_engine, schema_engine
    from careloop.engine.migrate import upgrade

    if url is None:
        engine = make_engine(f"sqlite:///{folder / f'{name}.db'}")
        upgrade(engine)
        return engine, None
    engine, schema = schema_engine(url, "bench_import")
    upgrade(engine)
    return engine, schema


def _drop(url: str | None, engine: Engine, schema: str | None) -> None:
    from careloop.engine.db import drop_schema

    engine.dispose()
    if url and schema:
        drop_schema(url, schema)


def careloop_import(data: bytes, url: str | None, folder: Path, apps: bool) -> dict[str, Any]:
    """Seconds of the dry run, the apply and the second run (check + apply) of ``data``."""
    from careloop.engine.bundles import import_bundles
    from careloop.engine.db import transaction
    from careloop.flows.inbound import patients_import as pi

    engine, schema = _engine(url, folder, "careloop")
    try:
        if apps:
            import_bundles(sorted(p for p in (ROOT / "app_definitions").iterdir()
                                  if (p / "app.yaml").exists()), engine=engine)
        cpu = time.process_time()
        began = time.perf_counter()
        table = pi.read_table("患者.xlsx", data)
        mapping = pi.guess_mapping(table.headers)
        with transaction(engine) as session:
            report = pi.check(session, table, mapping)
        checked, checked_cpu = time.perf_counter(), time.process_time()
        result = pi.apply(engine, report.patients, source="bench")
        applied, applied_cpu = time.perf_counter(), time.process_time()
        assert result.failed_batches == [] and result.created == len(report.patients), result
        with transaction(engine) as session:
            again = pi.check(session, pi.read_table("患者.xlsx", data), mapping)
        second = pi.apply(engine, again.patients, source="bench")
        finished = time.perf_counter()
        assert second.created == 0, second
        return {"rows": report.total, "patients": len(report.patients),
                "rejected_rows": len(report.rejected_rows), "dry_run": checked - began,
                "apply": applied - checked, "second_run": finished - applied,
                "dry_run_cpu": checked_cpu - cpu, "apply_cpu": applied_cpu - checked_cpu,
                "cleaned": [dict(item.fields) for item in report.patients]}
    finally:
        _drop(url, engine, schema)


def bare_insert(patients: list[dict[str, Any]], url: str | None, folder: Path) -> float:
    """Seconds to insert the same cleaned patients with Core ``insert``, 500 a transaction."""
    from careloop.engine.clock import now_utc
    from careloop.engine.domain import Patient

    engine, schema = _engine(url, folder, "bare")
    now = now_utc()
    rows = [{"id": p["patient_id"], "mrn": p["mrn"], "name": p["name"], "gender": p.get("gender"),
             "phone": p.get("phone"), "id_number": p.get("id_number"),
             "birth_date": p.get("birth_date"), "attributes": {}, "consents": {},
             "created_at": now, "updated_at": now} for p in patients]
    try:
        began = time.perf_counter()
        for first in range(0, len(rows), 500):
            with engine.begin() as conn:
                conn.execute(insert(Patient), rows[first:first + 500])
        elapsed = time.perf_counter() - began
        with engine.begin() as conn:
            conn.execute(delete(Patient))
        return elapsed
    finally:
        _drop(url, engine, schema)


def run(rows: int, url: str | None, apps: bool) -> dict[str, Any]:
    from careloop.engine.registry import loaded_registry

    loaded_registry()  # the engines' plugins load once per process, not in the figures
    data = workbook(rows)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        careloop = careloop_import(data, url, folder, apps)
        bare = bare_insert(careloop.pop("cleaned"), url, folder)
    patients = careloop["patients"]
    return {"database": "postgresql" if url else "sqlite", "apps": apps, **careloop,
            "bare_insert": bare,
            "careloop_patients_per_s": patients / careloop["apply"],
            "bare_patients_per_s": patients / bare,
            "apply_vs_bare": careloop["apply"] / bare,
            "total": careloop["dry_run"] + careloop["apply"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--apps", action="store_true", help="import app_definitions/ first")
    parser.add_argument("--pg", help="also run on this PostgreSQL URL (a scratch schema)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = [run(args.rows, None, args.apps)]
    if args.pg:
        results.append(run(args.rows, args.pg, args.apps))
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        print(f"{r['database']}{' + shipped apps' if r['apps'] else ''}: {r['rows']} rows, "
              f"{r['patients']} patients, {r['rejected_rows']} rejected rows")
        print(f"  dry run {r['dry_run']:.1f} s + apply {r['apply']:.1f} s = "
              f"{r['total']:.1f} s; second run {r['second_run']:.1f} s")
        print(f"  this process's CPU: dry run {r['dry_run_cpu']:.1f} s + apply "
              f"{r['apply_cpu']:.1f} s (what the wall time approaches on an idle machine)")
        print(f"  apply {r['careloop_patients_per_s']:.0f} patients/s vs bare insert "
              f"{r['bare_patients_per_s']:.0f}/s: {r['apply_vs_bare']:.1f}x the bare time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
