"""Patient lists imported from Excel or CSV (the old follow-up system's export, seed 003).

    rows = read_table("患者.xlsx", data)       # openpyxl read-only (streaming) or CSV (UTF-8 with
                                               # BOM, else GB18030)
    mapping = guess_mapping(rows.headers)      # 姓名 → name, 病案号/住院号 → mrn, 身份证号 → …
    report = check(session, rows, mapping)     # the dry run: every rejected row, column, reason
    apply(engine, report, …)                   # patient.upserted by the events path, 500 a batch

Cleaning: mainland mobile numbers (``+86 138-0013-8000`` → ``13800138000``), resident ID numbers
checked with python-stdnum (``stdnum.cn.ric``; birth date and sex derived and cross-checked), dates
in the common Chinese forms (2024-03-05, 2024/3/5, 2024.3.5, 2024年3月5日, 20240305, Excel
serial numbers and date cells). Rows naming the same patient (same MRN or ID number) are merged;
the same MRN with another person's name or ID number, or the same ID number under another MRN, is
rejected with the row it clashes with. Each accepted patient becomes one ``patient.upserted``
event whose id is derived from its content, so a second run of the same file changes nothing.
Reasons are codes with parameters (``hisdata.import.reason.<code>``), shown in words in zh-CN or
en.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import importlib
import io
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session
from stdnum.cn import ric
from stdnum.exceptions import InvalidChecksum, InvalidComponent, InvalidLength, ValidationError

from careloop.engine.clock import now_utc, to_local
from careloop.engine.db import transaction
from careloop.engine.domain import Patient
from careloop.engine.models import DomainEventRow
from careloop.flows.inbound.models import ImportJob, ImportMapping

BATCH = 500
MAX_ROWS = 200_000
MAX_BYTES = 50 * 1024 * 1024

# Fields, in the order the mapping form shows them, and the headers that name them.
FIELDS: dict[str, tuple[str, ...]] = {
    "patient_id": ("患者id", "患者编号", "病人id", "病人编号", "patientid", "patient_id",
                   "patient id"),
    "mrn": ("病案号", "住院号", "病历号", "门诊号", "mrn", "medical record number"),
    "name": ("姓名", "患者姓名", "病人姓名", "name", "patient name"),
    "id_number": ("身份证号", "身份证号码", "身份证", "证件号码", "id number", "id_number",
                  "resident id"),
    "phone": ("手机号", "手机号码", "手机", "联系电话", "电话", "phone", "mobile", "telephone"),
    "gender": ("性别", "gender", "sex"),
    "birth_date": ("出生日期", "生日", "birth date", "birth_date", "date of birth", "dob"),
    "department": ("科室", "出院科室", "就诊科室", "department", "dept"),
    "discharge_date": ("出院日期", "出院时间", "discharge date", "discharge_date"),
}
REQUIRED = ("mrn", "name")
_PATIENT_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_MOBILE = re.compile(r"^1[3-9][0-9]{9}$")
_GENDERS = {"男": "male", "m": "male", "male": "male", "1": "male", "女": "female",
            "f": "female", "female": "female", "2": "female", "未知": "unknown",
            "unknown": "unknown", "0": "unknown", "9": "other", "其他": "other",
            "other": "other"}


class ImportFileError(Exception):
    """The file cannot be read as a table (not XLSX/CSV, no header row, too large): a code
    (``hisdata.import.file.<code>``) and its parameters."""

    def __init__(self, code: str, **params: Any) -> None:
        super().__init__(code)
        self.code, self.params = code, params

    def text(self, locale: str | None) -> str:
        from careloop.engine.i18n import t

        return t(f"hisdata.import.file.{self.code}", locale, **self.params)


# --- reading -------------------------------------------------------------------------------------


@dataclass(slots=True)
class Table:
    headers: list[str]
    rows: list[tuple[int, list[Any]]]  # (row number in the file, cells)


def read_table(filename: str, data: bytes) -> Table:
    """The first sheet of an XLSX (read-only, streamed) or a CSV file; rows numbered as the
    spreadsheet numbers them (the header is row 1); blank rows left out."""
    if len(data) > MAX_BYTES:
        raise ImportFileError("too_large", limit=MAX_BYTES // (1024 * 1024))
    lower = filename.lower()
    if lower.endswith((".xlsx", ".xlsm")):
        raw = _xlsx_rows(data)
    elif lower.endswith((".csv", ".txt")):
        raw = _csv_rows(data)
    else:
        raise ImportFileError("not_table")
    headers: list[str] | None = None
    rows: list[tuple[int, list[Any]]] = []
    for number, cells in raw:
        if headers is None:
            if any(_blank(c) is False for c in cells):
                headers = [str(c).strip() if c is not None else "" for c in cells]
            continue
        if all(_blank(c) for c in cells):
            continue
        if len(rows) >= MAX_ROWS:
            raise ImportFileError("too_many_rows", limit=MAX_ROWS)
        rows.append((number, list(cells)))
    if headers is None:
        raise ImportFileError("no_header")
    return Table(headers, rows)


def _blank(cell: Any) -> bool:
    return cell is None or (isinstance(cell, str) and not cell.strip())


def _xlsx_rows(data: bytes) -> Iterator[tuple[int, list[Any]]]:
    from zipfile import BadZipFile

    # openpyxl has no bundled type information; used through Any (as reports/export.py does).
    openpyxl: Any = importlib.import_module("openpyxl")
    try:
        book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (BadZipFile, KeyError, ValueError, OSError):
        raise ImportFileError("bad_xlsx") from None
    try:
        sheet = book.worksheets[0]
        for number, row in enumerate(sheet.iter_rows(values_only=True), start=1):
            yield number, list(row)
    finally:
        book.close()


def _csv_rows(data: bytes) -> Iterator[tuple[int, list[Any]]]:
    try:
        content = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            content = data.decode("gb18030")
        except UnicodeDecodeError:
            raise ImportFileError("bad_encoding") from None
    reader = csv.reader(io.StringIO(content, newline=""))
    try:
        for number, row in enumerate(reader, start=1):
            yield number, list(row)
    except csv.Error:
        raise ImportFileError("bad_csv", line=reader.line_num) from None


# --- the mapping ---------------------------------------------------------------------------------


def _norm(header: str) -> str:
    return re.sub(r"[\s:：*（）()]+", " ", header).strip().lower()


def guess_mapping(headers: Sequence[str]) -> dict[str, str]:
    """Field → header, from the usual Chinese and English column names (the first one
    matching)."""
    normal = {_norm(h): h for h in headers if h}
    found: dict[str, str] = {}
    for name, names in FIELDS.items():
        for candidate in names:
            if candidate in normal and normal[candidate] not in found.values():
                found[name] = normal[candidate]
                break
    return found


def remembered_mapping(session: Session, source: str, headers: Sequence[str]) -> dict[str, str]:
    """The mapping last used for ``source`` (where its headers are in this file), completed by
    :func:`guess_mapping`."""
    row = session.get(ImportMapping, source)
    guessed = guess_mapping(headers)
    if row is None:
        return guessed
    kept = {k: v for k, v in row.mapping.items() if k in FIELDS and v in headers}
    return {**{k: v for k, v in guessed.items() if v not in kept.values()}, **kept}


def remember_mapping(session: Session, source: str, mapping: dict[str, str],
                     actor: str | None) -> None:
    row = session.get(ImportMapping, source)
    if row is None:
        row = ImportMapping(source=source, mapping={})
        session.add(row)
    row.mapping, row.updated_at, row.updated_by = dict(mapping), now_utc(), actor
    session.flush()


def mapping_problems(headers: Sequence[str], mapping: dict[str, str]) -> list[dict[str, Any]]:
    """What is wrong with a mapping: an unknown field or header, a required field unmapped, one
    column mapped twice."""
    found: list[dict[str, Any]] = []
    for name, header in mapping.items():
        if name not in FIELDS:
            found.append({"field": name, "code": "unknown_field", "params": {}})
        elif header not in headers:
            found.append({"field": name, "code": "unknown_column", "params": {"column": header}})
    for name in REQUIRED:
        if not mapping.get(name):
            found.append({"field": name, "code": "required_unmapped", "params": {}})
    seen: dict[str, str] = {}
    for name, header in mapping.items():
        if header in seen:
            found.append({"field": name, "code": "column_twice",
                          "params": {"column": header, "other": seen[header]}})
        seen[header] = name
    return found


# --- cleaning ------------------------------------------------------------------------------------


class Reject(Exception):
    def __init__(self, code: str, **params: Any) -> None:
        super().__init__(code)
        self.code, self.params = code, params


def clean_phone(value: Any) -> str:
    """``+86 138-0013-8000`` → ``13800138000``; anything but a mainland mobile is refused."""
    digits = re.sub(r"[\s()\-（）]", "", _cell_text(value))
    for prefix in ("+86", "0086", "86"):
        if digits.startswith(prefix) and len(digits) == 11 + len(prefix):
            digits = digits[len(prefix):]
    if not _MOBILE.match(digits):
        raise Reject("bad_phone")
    return digits


def clean_id_number(value: Any) -> str:
    text = _cell_text(value).upper().replace(" ", "")
    try:
        return str(ric.validate(text))
    except InvalidChecksum:
        raise Reject("id_checksum") from None
    except InvalidLength:
        raise Reject("id_length") from None
    except InvalidComponent:
        raise Reject("id_birth_date") from None
    except ValidationError:
        raise Reject("id_format") from None


EXCEL_EPOCH = date(1899, 12, 30)
_DATE_FORMS = (
    re.compile(r"^(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})(?:[ T].*)?$"),
    re.compile(r"^(\d{4})年(\d{1,2})月(\d{1,2})日?(?:\s.*)?$"),
    re.compile(r"^(\d{4})(\d{2})(\d{2})$"),
)


def clean_date(value: Any) -> date:
    """A date from a date cell, an Excel serial number or the common Chinese written forms."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        if 1 <= value < 2958466 and not (10_000_000 <= value <= 99_991_231):
            return EXCEL_EPOCH + timedelta(days=int(value))
        value = str(int(value))
    text = _cell_text(value)
    for form in _DATE_FORMS:
        found = form.match(text)
        if found:
            try:
                return date(int(found[1]), int(found[2]), int(found[3]))
            except ValueError:
                raise Reject("bad_date") from None
    raise Reject("bad_date")


def _cell_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


@dataclass(slots=True)
class Rejection:
    row: int
    column: str  # the file's header ("" for the row as a whole)
    field: str
    code: str
    params: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"row": self.row, "column": self.column, "field": self.field, "code": self.code,
                "params": self.params}


@dataclass(slots=True)
class Clean:
    """One patient as it will be sent (merged over the rows that name it)."""

    rows: list[int]
    fields: dict[str, Any]


@dataclass(slots=True)
class Report:
    total: int = 0
    patients: list[Clean] = dataclasses.field(default_factory=list)
    rejected: list[Rejection] = dataclasses.field(default_factory=list)
    merged: int = 0

    @property
    def rejected_rows(self) -> list[int]:
        return sorted({r.row for r in self.rejected})

    def to_json(self) -> dict[str, Any]:
        return {"total": self.total, "accepted": len(self.patients), "merged": self.merged,
                "rejected_rows": len(self.rejected_rows),
                "rejected": [r.to_json() for r in self.rejected]}


def _clean_row(number: int, cells: list[Any], index: dict[str, int],
               mapping: dict[str, str]) -> tuple[dict[str, Any], list[Rejection]]:
    fields: dict[str, Any] = {}
    problems: list[Rejection] = []

    def cell(name: str) -> Any:
        position = index.get(name)
        if position is None or position >= len(cells):
            return None
        value = cells[position]
        return None if _blank(value) else value

    def refuse(name: str, code: str, **params: Any) -> None:
        problems.append(Rejection(number, mapping.get(name, ""), name, code, params))

    for name in REQUIRED:
        if cell(name) is None:
            refuse(name, "missing")
    if cell("name") is not None:
        name_text = _cell_text(cell("name"))
        if len(name_text) > 128:
            refuse("name", "too_long", limit=128)
        fields["name"] = name_text
    if cell("mrn") is not None:
        mrn = _cell_text(cell("mrn"))
        if len(mrn) > 64:
            refuse("mrn", "too_long", limit=64)
        fields["mrn"] = mrn
    if cell("patient_id") is not None:
        pid = _cell_text(cell("patient_id"))
        if not _PATIENT_ID.match(pid):
            refuse("patient_id", "bad_patient_id")
        fields["patient_id"] = pid
    converters = {"phone": clean_phone, "id_number": clean_id_number,
                  "birth_date": clean_date, "discharge_date": clean_date}
    for name, convert in converters.items():
        if cell(name) is not None:
            try:
                fields[name] = convert(cell(name))
            except Reject as exc:
                refuse(name, exc.code, **exc.params)
    if cell("gender") is not None:
        gender = _GENDERS.get(_cell_text(cell("gender")).lower())
        if gender is None:
            refuse("gender", "bad_gender")
        else:
            fields["gender"] = gender
    if cell("department") is not None:
        fields["department"] = _cell_text(cell("department"))[:64]
    today = to_local(now_utc()).date()
    born = fields.get("birth_date")
    if isinstance(born, date) and not date(1900, 1, 1) <= born <= today:
        refuse("birth_date", "date_out_of_range")
    if "id_number" in fields:
        derived_birth = ric.get_birth_date(fields["id_number"])
        derived_sex = "male" if int(fields["id_number"][16]) % 2 else "female"
        if isinstance(born, date) and born != derived_birth:
            refuse("birth_date", "birth_date_mismatch")
        fields.setdefault("birth_date", derived_birth)
        if fields.get("gender") in ("male", "female") and fields["gender"] != derived_sex:
            refuse("gender", "gender_mismatch")
        fields.setdefault("gender", derived_sex)
    return fields, problems


def check(session: Session, table: Table, mapping: dict[str, str]) -> Report:
    """The dry run: every row cleaned; rows naming one patient merged; every rejected row with
    its row number, column and reason. Reads the database (patients already known by MRN or ID
    number) and writes nothing."""
    index = {name: table.headers.index(header) for name, header in mapping.items()
             if header in table.headers}
    report = Report(total=len(table.rows))
    by_mrn: dict[str, Clean] = {}
    by_id: dict[str, Clean] = {}
    for number, cells in table.rows:
        fields, problems = _clean_row(number, cells, index, mapping)
        if problems:
            report.rejected.extend(problems)
            continue
        mrn, id_number = fields["mrn"], fields.get("id_number")
        same = by_mrn.get(mrn)
        other = by_id.get(id_number) if id_number else None
        if same is not None:
            clash = _clash(same.fields, fields)
            if clash:
                report.rejected.append(Rejection(number, mapping.get(clash, ""), clash,
                                                 "duplicate_mrn", {"other_row": same.rows[0]}))
                continue
        if other is not None and other.fields["mrn"] != mrn:
            report.rejected.append(Rejection(number, mapping.get("id_number", ""), "id_number",
                                             "duplicate_id_number",
                                             {"other_row": other.rows[0]}))
            continue
        if same is not None:
            same.rows.append(number)
            same.fields.update(fields)
            report.merged += 1
            target = same
        else:
            target = Clean([number], fields)
            report.patients.append(target)
            by_mrn[mrn] = target
        if id_number:
            by_id[id_number] = target
    _against_database(session, report, mapping)
    report.rejected.sort(key=lambda r: (r.row, r.column))
    return report


def _clash(before: dict[str, Any], after: dict[str, Any]) -> str | None:
    """The field showing two rows with one MRN are different people (None: the same one)."""
    for name in ("id_number", "name", "patient_id"):
        if before.get(name) and after.get(name) and before[name] != after[name]:
            return name
    return None


def _against_database(session: Session, report: Report, mapping: dict[str, str]) -> None:
    """Resolve each patient's id (the HIS's for a known MRN) and refuse an ID number that
    belongs to a patient with another MRN."""
    kept: list[Clean] = []
    for start in range(0, len(report.patients), BATCH):
        chunk = report.patients[start:start + BATCH]
        mrns = [c.fields["mrn"] for c in chunk]
        ids = [c.fields["id_number"] for c in chunk if c.fields.get("id_number")]
        known: dict[str, str] = {mrn: pid for mrn, pid in session.execute(
            select(Patient.mrn, Patient.id).where(Patient.mrn.in_(mrns)))}
        holders: dict[str | None, str] = {ident: mrn for ident, mrn in session.execute(
            select(Patient.id_number, Patient.mrn).where(Patient.id_number.in_(ids)))} \
            if ids else {}
        for item in chunk:
            fields = item.fields
            holder = holders.get(fields.get("id_number"))
            if holder is not None and holder != fields["mrn"]:
                report.rejected.append(Rejection(item.rows[0], mapping.get("id_number", ""),
                                                 "id_number", "id_number_taken", {}))
                continue
            stored = known.get(fields["mrn"])
            if stored is not None and fields.get("patient_id", stored) != stored:
                report.rejected.append(Rejection(item.rows[0], mapping.get("patient_id", ""),
                                                 "patient_id", "mrn_taken", {}))
                continue
            fields.setdefault("patient_id", stored or _patient_id(fields["mrn"]))
            kept.append(item)
    report.patients = kept


def _patient_id(mrn: str) -> str:
    if _PATIENT_ID.match(mrn):
        return mrn
    return "mrn-" + hashlib.sha256(mrn.encode("utf-8")).hexdigest()[:24]


def event_of(item: Clean) -> dict[str, Any]:
    """The ``patient.upserted`` event of one cleaned patient; its id is derived from its
    content, so the same patient imported twice is one event."""
    fields = item.fields
    payload: dict[str, Any] = {"patient_id": fields["patient_id"], "mrn": fields["mrn"],
                               "name": fields["name"]}
    for name in ("gender", "phone", "id_number"):
        if name in fields:
            payload[name] = fields[name]
    if "birth_date" in fields:
        payload["birth_date"] = fields["birth_date"].isoformat()
    attributes = {}
    if "department" in fields:
        attributes["import_department"] = fields["department"]
    if "discharge_date" in fields:
        attributes["import_discharge_date"] = fields["discharge_date"].isoformat()
    if attributes:
        payload["attributes"] = attributes
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False)
                            .encode("utf-8")).hexdigest()[:20]
    return {"event_id": f"import-{fields['patient_id'][:64]}-{digest}",
            "type": "patient.upserted", "payload": payload}


# --- applying ------------------------------------------------------------------------------------


@dataclass(slots=True)
class ApplyResult:
    created: int = 0  # new events: patients created or changed
    unchanged: int = 0  # sent before, identical
    failed_batches: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"created": self.created, "unchanged": self.unchanged,
                "failed_batches": self.failed_batches}


class _BatchRefused(Exception):
    def __init__(self, row: int, errors: list[dict[str, Any]]) -> None:
        super().__init__(row)
        self.row, self.errors = row, errors


def apply(engine: Engine, patients: Sequence[Clean], *, source: str, actor: str = "import",
          job_id: int | None = None, batch: int = BATCH) -> ApplyResult:
    """Send every cleaned patient through the events path
    (:func:`careloop.flows.ingest_batch.ingest_many`, the batch form of the events API's
    ``ingest``), all or nothing per batch of ``batch`` patients: one transaction each, the
    job's progress moved in it. A batch that stores anything is audited (``import.patients``:
    ``actor``, the source, its rows and how many patients; no personal data); one that stores
    nothing writes nothing."""
    from careloop.engine import audit
    from careloop.flows.ingest_batch import ingest_many

    result = ApplyResult()
    for start in range(0, len(patients), batch):
        chunk = patients[start:start + batch]
        events = [event_of(item) for item in chunk]
        try:
            with transaction(engine) as session:
                seen = set(session.scalars(select(DomainEventRow.event_id).where(
                    DomainEventRow.event_id.in_([e["event_id"] for e in events]))).all())
                fresh = [(item, event) for item, event in zip(chunk, events, strict=True)
                         if event["event_id"] not in seen]  # not sent before with this content
                answers = ingest_many(session, [event for _, event in fresh],
                                      source=f"import:{source}"[:64])
                for (item, _), (status, body) in zip(fresh, answers, strict=True):
                    if status != 200:
                        raise _BatchRefused(item.rows[0], body.get("errors", []))
                if fresh:
                    audit.append(session, actor=actor[:64], action="import.patients",
                                 object_type="import_job" if job_id else "import_source",
                                 object_id=str(job_id) if job_id else source[:64],
                                 details={"source": source, "first_row": chunk[0].rows[0],
                                          "last_row": chunk[-1].rows[-1],
                                          "patients": len(fresh)})
                if job_id is not None:
                    job = session.get(ImportJob, job_id)
                    if job is not None:
                        job.done_rows = min(start + len(chunk), len(patients))
        except _BatchRefused as exc:
            result.failed_batches.append({
                "first_row": chunk[0].rows[0], "last_row": chunk[-1].rows[-1], "row": exc.row,
                "errors": [{"path": e.get("path", ""), "message": e.get("message", "")}
                           for e in exc.errors]})
            _progress(engine, job_id, min(start + len(chunk), len(patients)))
            continue
        result.unchanged += len(seen)
        result.created += len(chunk) - len(seen)
    return result


def _progress(engine: Engine, job_id: int | None, done: int) -> None:
    if job_id is None:
        return
    with transaction(engine) as session:
        job = session.get(ImportJob, job_id)
        if job is not None:
            job.done_rows = done


# --- jobs (the admin page) -----------------------------------------------------------------------


def create_job(session: Session, source: str, filename: str, data: bytes,
               actor: str | None) -> ImportJob:
    """Store an upload (the file itself, so any process can check and apply it)."""
    table = read_table(filename, data)
    job = ImportJob(source=source, filename=filename[:255], content=data, status="uploaded",
                    headers=table.headers, mapping=remembered_mapping(session, source,
                                                                      table.headers),
                    report={}, total_rows=len(table.rows), done_rows=0, created_by=actor)
    session.add(job)
    session.flush()
    return job


def check_job(session: Session, job: ImportJob, mapping: dict[str, str],
              actor: str | None) -> list[dict[str, Any]]:
    """The dry run of an uploaded job with ``mapping`` (remembered for its source); returns the
    mapping's problems (then nothing is checked)."""
    mapping = {k: v for k, v in mapping.items() if v}
    problems = mapping_problems(job.headers, mapping)
    if problems:
        return problems
    remember_mapping(session, job.source, mapping, actor)
    report = check(session, read_table(job.filename, job.content), mapping)
    job.mapping, job.report, job.status = mapping, report.to_json(), "checked"
    job.total_rows, job.done_rows = len(report.patients), 0
    return []


def start_apply(session: Session, job_id: int) -> bool:
    """Mark a checked job as applying, once (a conditional UPDATE: of two clicks, or two
    processes, one wins); False if it is not waiting to be applied."""
    started = session.execute(update(ImportJob).where(
        ImportJob.id == job_id, ImportJob.status == "checked").values(
        status="applying", done_rows=0))
    return started.rowcount == 1  # type: ignore[attr-defined, no-any-return]


def run_job(engine: Engine, job_id: int) -> None:
    """Apply a job marked ``applying``: check again (the database may have changed since the
    dry run), apply, store the result."""
    with transaction(engine) as session:
        job = session.get(ImportJob, job_id)
        if job is None or job.status != "applying":
            return
        report = check(session, read_table(job.filename, job.content), dict(job.mapping))
        source, actor = job.source, job.created_by or "import"
        job.total_rows = len(report.patients)
    try:
        result = apply(engine, report.patients, source=source, actor=actor, job_id=job_id)
    except Exception as exc:
        with transaction(engine) as session:
            job = session.get(ImportJob, job_id)
            if job is not None:
                job.status, job.finished_at = "failed", now_utc()
                job.report = {**job.report, "failure": type(exc).__name__}
        raise
    with transaction(engine) as session:
        job = session.get(ImportJob, job_id)
        if job is not None:
            job.status, job.finished_at = "done", now_utc()
            job.report = {**job.report, "result": result.to_json()}
            job.content = b""  # the patients are in Careloop now: the file's copy is not kept


# --- words ---------------------------------------------------------------------------------------


def field_label(name: str, locale: str | None) -> str:
    from careloop.engine.i18n import t

    return t(f"hisdata.import.field.{name}", locale)


def reason_text(rejection: Rejection | dict[str, Any], locale: str | None) -> str:
    """A rejected row's reason in words: ``身份证号校验位错误（最后一位不对）``."""
    from careloop.engine.i18n import t

    data = rejection.to_json() if isinstance(rejection, Rejection) else rejection
    return t(f"hisdata.import.reason.{data['code']}", locale,
             field=field_label(data["field"], locale), **data["params"])


def mapping_problem_text(problem: dict[str, Any], locale: str | None) -> str:
    from careloop.engine.i18n import t

    return t(f"hisdata.import.mapping.{problem['code']}", locale,
             field=field_label(problem["field"], locale), **problem["params"])
