"""Patient import from Excel/CSV: a 10,000-row workbook with ~5 % dirty rows (invalid ID
checksum, bad phone, unparseable date, duplicate MRN of another person) → the dry run lists
exactly those rows with their column and reason; the apply goes through the events path, all or
nothing per batch; a second run changes nothing. Then the person's journey through
``/admin/import`` (a GB18030 CSV: upload → mapping pre-filled → dry run → apply → result) and
``careloop import patients``."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from openpyxl import Workbook
from sqlalchemy import Engine, event, func, select
from sqlalchemy.orm import Session
from stdnum.cn import ric

from careloop.engine.db import transaction
from careloop.engine.domain import Patient
from careloop.engine.models import AuditRow, DomainEventRow
from careloop.flows.inbound import patients_import as pi
from careloop.flows.inbound.cli import import_group
from careloop.flows.inbound.models import ImportJob, ImportMapping
from careloop.flows.models import FlowRun, HisEventFingerprint
from careloop.web import admin
from careloop.web.app import create_app

HEADERS = ["序号", "姓名", "住院号", "身份证号", "手机号", "性别", "出生日期", "科室", "出院日期"]
PASSWORD = "Correct-Horse-Battery-9"


def id_number(n: int, born: date, male: bool) -> str:
    body = f"110105{born:%Y%m%d}{(n % 499) * 2 + (1 if male else 0):03d}"
    return body + ric.calc_check_digit(body + "0")  # it reads the first 17 characters


def _rows(count: int) -> tuple[list[list[Any]], set[tuple[int, str, str]], int]:
    """``count`` rows (spreadsheet rows 2…), the expected rejections (row, column, code) and how
    many rows repeat an earlier patient (to be merged)."""
    rows: list[list[Any]] = []
    bad: set[tuple[int, str, str]] = set()
    merged = 0
    for n in range(count):
        row_number = n + 2
        born = date(1940, 1, 1) + timedelta(days=(n * 37) % 25000)
        male = n % 2 == 0
        ident = id_number(n, born, male)
        phone = f"13{n % 10}{n:08d}"[:11]
        forms = (born.isoformat(), f"{born.year}/{born.month}/{born.day}",
                 f"{born.year}年{born.month}月{born.day}日", f"{born:%Y%m%d}",
                 datetime(born.year, born.month, born.day), "")
        birth: Any = forms[n % len(forms)]
        discharged: Any = (date(2024, 3, 5) - date(1899, 12, 30)).days + n % 300  # serial
        if n % 7 == 0:
            phone = f"+86 {phone[:3]}-{phone[3:7]}-{phone[7:]}"
        row = [n, f"患者{n}", f"ZY{n:06d}", ident, phone, "男" if male else "女", birth,
               "心内科", discharged]
        kind = n % 80 if n >= 10 else -1  # 4 of 80 rows are bad: 5 %
        if kind == 11:
            row[3] = ident[:-1] + ("0" if ident[-1] != "0" else "1")
            bad.add((row_number, "身份证号", "id_checksum"))
        elif kind == 23:
            row[4] = "1234567"
            bad.add((row_number, "手机号", "bad_phone"))
        elif kind == 37:
            row[8] = "三月五日"
            bad.add((row_number, "出院日期", "bad_date"))
        elif kind == 53:  # another person under an earlier row's MRN
            row[2] = f"ZY{n - 5:06d}"
            bad.add((row_number, "身份证号", "duplicate_mrn"))
        elif kind == 67:  # the same patient as the row before, again (merged)
            row[1:4] = rows[-1][1:4]
            row[5:7] = rows[-1][5:7]
            merged += 1
        rows.append(row)
    return rows, bad, merged


def _workbook(rows: list[list[Any]]) -> bytes:
    book = Workbook(write_only=True)
    sheet = book.create_sheet("患者")
    sheet.append(HEADERS)
    for row in rows:
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def test_ten_thousand_dirty_rows_dry_run_apply_and_second_run(
        engine: Engine, statements: list[str]) -> None:
    rows, bad, merged = _rows(10_000)
    data = _workbook(rows)
    table = pi.read_table("患者名单.xlsx", data)
    mapping = pi.guess_mapping(table.headers)
    assert mapping == {"mrn": "住院号", "name": "姓名", "id_number": "身份证号",
                       "phone": "手机号", "gender": "性别", "birth_date": "出生日期",
                       "department": "科室", "discharge_date": "出院日期"}
    with transaction(engine) as session:
        report = pi.check(session, table, mapping)
    found = {(r.row, r.column, r.code) for r in report.rejected}
    assert found == bad and len(bad) == 500
    assert report.merged == merged and len(report.patients) == 10_000 - 500 - merged
    words = {r.code: pi.reason_text(r, "zh-CN") for r in report.rejected}
    assert words["id_checksum"] == "身份证号校验位错误（最后一位与前 17 位不符）"
    assert re.fullmatch(r"病案号与第 \d+ 行相同，但身份证号不同：不是同一位患者",
                        words["duplicate_mrn"])
    with transaction(engine) as session:  # a dry run writes nothing
        assert session.scalar(select(func.count()).select_from(Patient)) == 0

    del statements[:]
    result = pi.apply(engine, report.patients, source="old_followup")
    # Set-based per batch of 500 (one transaction, bulk reads and writes, each event still
    # dispatched to every handler): about one statement a patient, not the ~17 of one events
    # API call per row. Speed itself is shown by bench/import_patients.py, not timed here.
    assert len(statements) < 1.5 * len(report.patients), len(statements)
    assert result.failed_batches == [] and result.created == len(report.patients)
    with transaction(engine) as session:
        assert session.scalar(select(func.count()).select_from(Patient)) == 9_500 - merged
        one = session.get(Patient, "ZY000007")  # n = 7: "+86 137-0000-0007", a serial date
        assert one is not None and one.phone == "13700000007" and one.gender == "female"
        assert one.birth_date == date(1940, 1, 1) + timedelta(days=7 * 37)
        assert one.attributes["import_discharge_date"] == (date(2024, 3, 5)
                                                           + timedelta(days=7)).isoformat()
        stored = session.scalars(select(DomainEventRow).where(
            DomainEventRow.payload["patient_id"].as_string() == "ZY000007")).one()
        assert (stored.type, stored.source) == ("patient.upserted", "import:old_followup")
        assert "name" not in stored.payload and "phone" not in stored.payload  # the log keeps ids
        before = _counts(session)
    assert before[DomainEventRow] == before[HisEventFingerprint] == len(report.patients)
    with transaction(engine) as session:  # one audit row per batch, no personal data in it
        audited = session.scalars(select(AuditRow).order_by(AuditRow.id)).all()
    assert len(audited) == -(-len(report.patients) // 500) == 19
    assert {(a.action, a.actor, a.object_id) for a in audited} == {
        ("import.patients", "import", "old_followup")}
    assert audited[0].details == {"source": "old_followup", "first_row": 2, "last_row": 534,
                                  "patients": 500}

    with transaction(engine) as session:
        again = pi.check(session, pi.read_table("患者名单.xlsx", data), mapping)
    assert again.to_json() == report.to_json()
    del statements[:]
    second = pi.apply(engine, again.patients, source="old_followup")
    assert (second.created, second.unchanged) == (0, len(report.patients))
    assert len(statements) < 60  # one look-up of the batch's event ids per batch, no writes
    with transaction(engine) as session:
        assert _counts(session) == before


@pytest.fixture
def statements(engine: Engine) -> Iterator[list[str]]:
    """Every SQL statement run on ``engine`` during the test."""
    seen: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    yield seen
    event.remove(engine, "before_cursor_execute", count)


def _counts(session: Session) -> dict[type, int | None]:
    return {table: session.scalar(select(func.count()).select_from(table))
            for table in (Patient, DomainEventRow, HisEventFingerprint, AuditRow, FlowRun)}


def test_cleaning_rules() -> None:
    assert pi.clean_phone("+86 138-0013-8000") == pi.clean_phone("008613800138000") \
        == "13800138000"
    assert pi.clean_phone(13800138000.0) == "13800138000"
    for wrong in ("010-12345678", "1380013800", "23800138000"):
        with pytest.raises(pi.Reject, match="bad_phone"):
            pi.clean_phone(wrong)
    expected = date(2024, 3, 5)
    for form in ("2024-03-05", "2024/3/5", "2024.3.5", "2024年3月5日", "20240305", 45356,
                 "2024-03-05 08:30:00", datetime(2024, 3, 5, 8, 30)):
        assert pi.clean_date(form) == expected, form
    for wrong in ("2024-02-30", "3/5/2024", "昨天"):
        with pytest.raises(pi.Reject, match="bad_date"):
            pi.clean_date(wrong)
    ident = id_number(1, date(1980, 2, 29), male=True)
    assert pi.clean_id_number(ident.lower()) == ident
    with pytest.raises(pi.Reject, match="id_length"):
        pi.clean_id_number(ident[:-2])
    table = pi.Table(["姓名", "病案号", "身份证号", "性别", "出生日期"],
                     [(2, ["张三", "M1", ident, "女", "1980-03-01"])])
    _, problems = pi._clean_row(2, table.rows[0][1], {
        "name": 0, "mrn": 1, "id_number": 2, "gender": 3, "birth_date": 4}, {
        "name": "姓名", "mrn": "病案号", "id_number": "身份证号", "gender": "性别",
        "birth_date": "出生日期"})
    assert {(p.column, p.code) for p in problems} == {("性别", "gender_mismatch"),
                                                      ("出生日期", "birth_date_mismatch")}


def _sign_in(client: TestClient) -> None:
    with transaction() as session:
        user = admin.create_user(session, username="it", display_name="信息科",
                                 password=PASSWORD)
        admin.grant(session, user, "system_admin", None)
    page = client.get("/login")
    client.post("/login", data={"username": "it", "password": PASSWORD,
                                "csrf_token": _csrf(page.text), "next": "/"})


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found is not None
    return found.group(1)


CSV = ("病人姓名,病案号,身份证,联系电话,性别,生日\r\n"
       "王芳,A-001,{a},139 1234 5678,女,1975年6月1日\r\n"
       "李雷,A-002,{b},12345,男,1990/1/2\r\n"
       "赵六,A-003,,+8613700001111,男,19880808\r\n")


def test_the_admin_page_journey_with_a_gb18030_csv(engine: Engine) -> None:
    text = CSV.format(a=id_number(3, date(1975, 6, 1), male=False),
                      b=id_number(4, date(1990, 1, 2), male=True))
    client = TestClient(create_app())
    _sign_in(client)
    headers = {"Accept-Language": "zh-CN"}
    index = client.get("/admin/import", headers=headers)
    assert index.status_code == 200 and "从 Excel/CSV 导入患者" in index.text
    upload = client.post("/admin/import", headers=headers, follow_redirects=False,
                         data={"csrf_token": _csrf(index.text), "source": "旧随访系统"},
                         files={"file": ("名单.csv", text.encode("gb18030"), "text/csv")})
    assert upload.status_code == 303
    page = client.get(upload.headers["location"], headers=headers)
    for field, column in (("name", "病人姓名"), ("mrn", "病案号"), ("id_number", "身份证"),
                          ("phone", "联系电话"), ("birth_date", "生日")):
        chosen = re.search(rf'name="map\.{field}".*?<option value="([^"]+)" selected', page.text,
                           re.DOTALL)
        assert chosen is not None and chosen.group(1) == column
    job = upload.headers["location"].rsplit("/", 1)[1]
    form = {"csrf_token": _csrf(page.text), "map.name": "病人姓名", "map.mrn": "病案号",
            "map.id_number": "身份证", "map.phone": "联系电话", "map.gender": "性别",
            "map.birth_date": "生日"}
    missing = client.post(f"/admin/import/{job}/check", headers=headers,
                          data={**form, "map.mrn": ""})
    assert missing.status_code == 422 and "病案号/住院号必须对应到一列" in missing.text
    checked = client.post(f"/admin/import/{job}/check", headers=headers, data=form)
    assert checked.status_code == 200
    assert "共 3 行：可导入 2 位患者" in checked.text and "拒绝 1 行" in checked.text
    assert re.search(r'data-row="3"><td>3</td><td>联系电话</td><td>手机号不是有效的中国大陆手机号',
                     checked.text)
    applied = client.post(f"/admin/import/{job}/apply", headers=headers,
                          data={"csrf_token": _csrf(checked.text)})
    assert applied.status_code == 200  # the background apply ran after the redirect
    assert "新增或更新 2 位患者，0 位与已有资料相同未作改变" in applied.text
    assert client.get(f"/admin/import/{job}/progress").json() == {
        "status": "done", "done": 2, "total": 2}
    assert client.post(f"/admin/import/{job}/apply",
                       data={"csrf_token": _csrf(checked.text)}).status_code == 409
    with transaction(engine) as session:
        wang = session.scalars(select(Patient).where(Patient.mrn == "A-001")).one()
        assert (wang.name, wang.phone, wang.birth_date) == ("王芳", "13912345678",
                                                           date(1975, 6, 1))
        remembered = session.get(ImportMapping, "旧随访系统")
        assert remembered is not None and remembered.mapping["mrn"] == "病案号"
        stored = session.get(ImportJob, int(job))
        assert stored is not None and stored.content == b""  # no copy of the file kept
        audited = session.scalars(select(AuditRow).where(
            AuditRow.action == "import.patients")).one()  # by the person who uploaded it
        assert (audited.actor, audited.object_type, audited.object_id) == ("it", "import_job",
                                                                          job)
    english = client.get(f"/admin/import/{job}", headers={"Accept-Language": "en"})
    assert "Not a valid mainland China mobile number" in english.text
    assert "null" not in english.text and "None" not in english.text

    bad = client.post("/admin/import", headers=headers, data={
        "csrf_token": _csrf(index.text), "source": "x"},
        files={"file": ("名单.pdf", b"%PDF-1.4", "application/pdf")})
    assert bad.status_code == 422
    assert "无法读取文件：只能导入 .xlsx 或 .csv 文件" in bad.text


def test_the_cli_reports_rows_as_file_row_column(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "patients.csv"
    text = CSV.format(a=id_number(3, date(1975, 6, 1), male=False),
                      b=id_number(4, date(1990, 1, 2), male=True))
    path.write_bytes(("\ufeff" + text).encode("utf-8"))
    runner = CliRunner()
    dry = runner.invoke(import_group, ["patients", str(path), "--locale", "en"])
    assert dry.exit_code == 0, dry.output
    assert f"{path}:3:联系电话: Not a valid mainland China mobile number" in dry.output
    with transaction(engine) as session:
        assert session.scalar(select(func.count()).select_from(Patient)) == 0
    done = runner.invoke(import_group, ["patients", str(path), "--apply"])
    assert done.exit_code == 0, done.output
    assert '"created": 2' in done.output
    again = runner.invoke(import_group, ["patients", str(path), "--apply"])
    assert '"created": 0, "unchanged": 2' in again.output


def test_the_documented_sample_file_imports_clean(engine: Engine) -> None:
    sample = Path(__file__).resolve().parents[2] / "docs" / "samples" / "patients_import.csv"
    table = pi.read_table(sample.name, sample.read_bytes())
    with transaction(engine) as session:
        report = pi.check(session, table, pi.guess_mapping(table.headers))
    assert report.rejected == [] and len(report.patients) == 2
    assert report.patients[1].fields["phone"] == "13700001111"
