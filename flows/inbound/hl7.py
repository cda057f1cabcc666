"""HL7 v2 in: one message (MLLP or HTTP) → stored, mapped to events, ingested, acknowledged.

    raw bytes ──charset (MSH-18)──▶ text ──python-hl7──▶ message ──hl7_mapping──▶ events
        │                                                                             │
        └──── hl7_messages row (raw bytes, state, ACK) ◀── same transaction ── flows.ingest

What each trigger event means for Careloop:

======== ====================================================================================
A01      the patient (PID) and ``encounter.admitted``
A02      the patient and ``encounter.admitted`` again: the encounter's department/ward change
A03      the patient and ``encounter.discharged`` (discharge time PV1-45, else EVN-6, EVN-2)
A04, A08 ``patient.upserted`` (registration, demographics update)
A11      ``encounter.admission_cancelled``; A13 ``encounter.discharge_cancelled``
A40      merge: the surviving patient (PID) is updated and the prior id (MRG-1) is recorded on
         it (``attributes.merged_ids``), on the message and in the audit log; the prior
         patient's records stay where they are for staff to review (nothing is moved or deleted)
ORU^R01  each OBX whose code is in the ``observations`` table → ``reading.recorded`` (value,
         unit, code, reference range, abnormal flag; systolic + diastolic make one blood
         pressure); every other OBX → ``result.recorded``, a laboratory result
         (:mod:`careloop.flows.inbound.hl7_obx`)
======== ====================================================================================

The ACK (original mode): MSH with sender and receiver swapped, MSA-1 ``AA`` (stored; a patient
not known yet is parked and applied when it arrives), ``AE`` (content error: every problem in an
ERR naming the segment-field, e.g. ``PV1^1^3^1^1`` for PV1-3.1, HL7 table 0357 code, severity)
or ``AR`` (unsupported message type, trigger, version or processing id; unreadable framing or
charset). MSA-2 is MSH-10. A message whose MSH-3/MSH-4/MSH-10 was seen is answered the stored ACK
and processed once. Nothing personal is logged: the log names control ids and codes only.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import hl7
from sqlalchemy import Engine, select
from sqlalchemy import text as sql
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from careloop.engine import audit
from careloop.engine.clock import hospital_tz, now_utc
from careloop.engine.db import transaction
from careloop.engine.domain import Patient
from careloop.engine.errors import CareloopError
from careloop.flows.inbound.hl7_mapping import PASS_THROUGH, FieldRef, Hl7MappingSpec, mapping_for
from careloop.flows.models import Hl7Message

log = logging.getLogger("careloop.flows.hl7")

VERSIONS = ("2.1", "2.2", "2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8",
            "2.8.1", "2.8.2", "2.9")
ADT_EVENTS = ("A01", "A02", "A03", "A04", "A08", "A11", "A13", "A40")
# HL7 table 0357, message error condition codes
TABLE_0357 = {"0": "Message accepted", "100": "Segment sequence error",
              "101": "Required field missing", "102": "Data type error",
              "103": "Table value not found", "104": "Value too long",
              "200": "Unsupported message type", "201": "Unsupported event code",
              "202": "Unsupported processing id", "203": "Unsupported version id",
              "204": "Unknown key identifier", "205": "Duplicate key identifier",
              "206": "Application record locked", "207": "Application internal error"}
# MSH-18 names seen from HIS vendors (HL7 table 0211 and Chinese practice) → Python codecs.
CHARSETS = {"": "utf-8", "ASCII": "utf-8", "UNICODEUTF8": "utf-8", "UTF8": "utf-8",
            "UNICODE": "utf-8", "GB18030": "gb18030", "GB180302000": "gb18030",
            "GB180302005": "gb18030", "GBK": "gb18030", "GB2312": "gb18030", "CP936": "gb18030",
            "ISOIR58": "gb18030", "88591": "latin-1", "ISO88591": "latin-1",
            **{f"8859{n}": f"iso8859-{n}" for n in range(2, 16) if n != 12}}
# Event fields holding personal data: their problems never repeat the value.
PERSONAL = frozenset({"patient_id", "mrn", "name", "phone", "birth_date", "id_number"})
MAX_MESSAGE_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem of a message: where (``PV1-3.1``), HL7 table 0357 code, words."""

    location: str
    code: str
    message: str
    severity: str = "E"

    def to_json(self) -> dict[str, str]:
        return {"location": self.location, "code": self.code, "message": self.message,
                "severity": self.severity}


@dataclass(slots=True)
class Header:
    """What the ACK needs from MSH, read even from a message python-hl7 cannot parse."""

    sending_app: list[str] = field(default_factory=list)
    sending_facility: list[str] = field(default_factory=list)
    receiving_app: list[str] = field(default_factory=list)
    receiving_facility: list[str] = field(default_factory=list)
    control_id: str = ""
    processing_id: str = ""
    version: str = ""
    message_code: str = ""
    trigger: str = ""
    charset: str = ""

    @property
    def sender(self) -> str:
        return self.sending_app[0] if self.sending_app else ""

    @property
    def facility(self) -> str:
        return self.sending_facility[0] if self.sending_facility else ""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the listener sends back: the ACK text, its code, and how to encode it."""

    ack: str
    code: str
    codec: str
    message_id: int | None = None
    duplicate: bool = False

    def ack_bytes(self) -> bytes:
        return self.ack.encode(self.codec, errors="replace")


# --- decoding and the header -----------------------------------------------------------------


def _normalise_charset(name: str) -> str:
    return re.sub(r"[^A-Z0-9]", "", name.upper())


def read_header(raw: bytes) -> Header:
    """MSH read from the bytes (ASCII-compatible in every supported charset)."""
    text = raw.removeprefix(b"\xef\xbb\xbf").decode("latin-1")
    first = re.split(r"\r\n|\r|\n", text, maxsplit=1)[0]
    head = Header()
    if not first.startswith("MSH") or len(first) < 8:
        return head
    sep, comp, rep = first[3], first[4], first[5]
    fields = first.split(sep)

    def get(n: int) -> str:  # MSH-n is fields[n - 1]: MSH-1 is the separator itself
        return fields[n - 1] if 1 < n <= len(fields) else ""

    def parts(n: int) -> list[str]:
        return get(n).split(rep)[0].split(comp)

    head.sending_app, head.sending_facility = parts(3), parts(4)
    head.receiving_app, head.receiving_facility = parts(5), parts(6)
    head.control_id = get(10)[:64]
    head.processing_id = parts(11)[0][:3]
    head.version = parts(12)[0][:16]
    kind = parts(9)
    head.message_code = kind[0][:8]
    head.trigger = kind[1][:8] if len(kind) > 1 else ""
    head.charset = get(18).split(rep)[0][:32]
    return head


def decode(raw: bytes, head: Header) -> tuple[str | None, str, list[Issue]]:
    """The message text in CR-separated segments, the codec used, and problems."""
    name = _normalise_charset(head.charset)
    codec = CHARSETS.get(name)
    if codec is None:
        return None, "utf-8", [Issue("MSH-18", "103", f"character set {head.charset!r} is not "
                                     "supported; use UNICODE UTF-8 or GB18030")]
    try:
        text = raw.removeprefix(b"\xef\xbb\xbf").decode(codec)
    except UnicodeDecodeError as exc:
        return None, codec, [Issue("MSH-18", "102", f"the message is not valid {codec} at byte "
                                   f"{exc.start}; name its character set in MSH-18")]
    text = re.sub(r"\r\n|\n", "\r", text).strip("\r")
    return text, codec, []


# --- reading fields ----------------------------------------------------------------------------

_SEGMENT_ID = re.compile(r"^[A-Z][A-Z0-9]{2}$")


def _parse(text: str) -> tuple[hl7.Message | None, list[Issue]]:
    segments = text.split("\r")
    for n, segment in enumerate(segments, start=1):
        if not _SEGMENT_ID.match(segment[:3]) or (len(segment) > 3 and segment[3] != text[3]):
            return None, [Issue(f"segment {n}", "100", "not a segment: a segment starts with "
                                "three capitals or digits and the field separator")]
    try:
        return hl7.parse(text), []
    except Exception:  # the parser's own errors vary; the sender gets an AR
        return None, [Issue("MSH-2", "102", "the message cannot be parsed with its encoding "
                            "characters (MSH-2)")]


def _occurrences(msg: hl7.Message, segment: str) -> int:
    return sum(1 for seg in msg if str(seg[0]) == segment)


def value(msg: hl7.Message, ref: FieldRef, occurrence: int = 1) -> str:
    """The (unescaped) text at ``ref`` in the ``occurrence``-th such segment; "" if absent."""
    try:
        found = msg.extract_field(ref.segment, occurrence, ref.field, 1, ref.component, ref.sub)
    except (KeyError, IndexError):
        return ""
    text = str(found or "")
    try:
        return str(msg.unescape(text)).strip()
    except Exception:  # a broken escape sequence is kept as sent
        return text.strip()


_DTM = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.\d{1,4})?([+-]\d{4})?$")


def parse_dtm(text: str) -> datetime | None:
    """HL7 DTM ``YYYYMMDDHHMM[SS][.S][+ZZZZ]``; without an offset it is hospital time."""
    found = _DTM.match(text)
    if found is None:
        return None
    y, mo, d, h, mi, s, offset = found.groups()
    if mo is None or d is None:
        return None
    tz: Any = hospital_tz()
    if offset:
        minutes = int(offset[1:3]) * 60 + int(offset[3:5])
        tz = timezone(timedelta(minutes=minutes if offset[0] == "+" else -minutes))
    try:
        return datetime(int(y), int(mo), int(d), int(h or 0), int(mi or 0), int(s or 0), tzinfo=tz)
    except ValueError:
        return None


# --- mapping a message to events ---------------------------------------------------------------


@dataclass(slots=True)
class Mapped:
    """The events of one message and where each payload field came from."""

    events: list[dict[str, Any]] = field(default_factory=list)
    locations: dict[tuple[int, str], str] = field(default_factory=dict)
    issues: list[Issue] = field(default_factory=list)
    merged: str | None = None
    skipped: int = 0


_CODE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")  # what a Careloop department id may be


class _Reader:
    def __init__(self, msg: hl7.Message, spec: Hl7MappingSpec, out: Mapped) -> None:
        self.msg, self.spec, self.out = msg, spec, out

    def text(self, section: str, name: str, *, required: bool = False,
             occurrence: int = 1) -> str | None:
        ref = self.spec.field(section, name)
        if ref is None:
            return None
        raw = value(self.msg, ref, occurrence)
        if not raw:
            if required:
                self.out.issues.append(Issue(ref.location, "101", f"{name} is missing"))
            return None
        if ref.table is None:
            return raw
        table = self.spec.tables.get(ref.table, {})
        if raw in table:
            return table[raw]
        if ref.table in PASS_THROUGH and _CODE.match(raw):
            return raw  # perhaps the Careloop id itself: the events intake checks it
        if ref.table in PASS_THROUGH:
            self.out.issues.append(Issue(ref.location, "103", f"unknown {name.removesuffix('_id')}"
                                         f" {raw!r}: not in the code table {ref.table!r} of the "
                                         f"mapping {self.spec.key!r}"))
            return None
        self.out.issues.append(Issue(ref.location, "103", f"code {raw!r} is not in the code "
                                     f"table {ref.table!r} of the mapping {self.spec.key!r}"))
        return None

    def when(self, section: str, name: str, occurrence: int = 1) -> str | None:
        raw = self.text(section, name, occurrence=occurrence)
        if raw is None:
            return None
        parsed = parse_dtm(raw)
        if parsed is None:
            ref = self.spec.field(section, name)
            self.out.issues.append(Issue(ref.location if ref else section, "102",
                                         f"{name} is not an HL7 date-time (YYYYMMDDHHMM)"))
            return None
        return parsed.isoformat()

    def locate(self, index: int, section: str, names: list[str]) -> None:
        for name in names:
            ref = self.spec.field(section, name)
            if ref is not None:
                self.out.locations[(index, name)] = ref.location


def _name(family: str, given: str) -> str:
    if family and given and not (family + given).isascii():
        return family + given  # 张 + 三 → 张三
    return " ".join(part for part in (given, family) if part)


def _event_time(msg: hl7.Message) -> str | None:
    for ref in ("EVN-6", "EVN-2", "MSH-7"):
        found = parse_dtm(value(msg, FieldRef.parse(ref)))
        if found is not None:
            return found.isoformat()
    return None


def _patient(r: _Reader, index: int) -> dict[str, Any] | None:
    pid = r.text("patient", "patient_id", required=True)
    mrn = r.text("patient", "mrn", required=True) or pid
    name = _name(r.text("patient", "family_name", required=True) or "",
                 r.text("patient", "given_name") or "")
    payload: dict[str, Any] = {"patient_id": pid, "mrn": mrn, "name": name}
    gender = r.text("patient", "gender")
    if gender:
        payload["gender"] = gender
    birth = r.text("patient", "birth_date")
    if birth:
        born = parse_dtm(birth[:8])
        if born is None:
            ref = r.spec.field("patient", "birth_date")
            r.out.issues.append(Issue(ref.location if ref else "PID-7", "102",
                                      "birth date is not an HL7 date (YYYYMMDD)"))
        else:
            payload["birth_date"] = born.date().isoformat()
    phone = re.sub(r"[^0-9+]", "", r.text("patient", "phone") or "")
    if 5 <= len(phone) <= 32:
        payload["phone"] = phone
    for name_ in ("id_number", "locale"):
        found = r.text("patient", name_)
        if found:
            payload[name_] = found
    r.locate(index, "patient", ["patient_id", "mrn", "family_name", "gender", "birth_date",
                                "phone", "id_number", "locale"])
    r.out.locations[(index, "name")] = r.out.locations.get((index, "family_name"), "PID-5")
    return payload if pid and name else None


def _encounter(r: _Reader, index: int, kind: str, patient_id: str) -> dict[str, Any]:
    payload: dict[str, Any] = {"encounter_id": r.text("encounter", "encounter_id", required=True),
                               "patient_id": patient_id}
    if kind in ("encounter.admitted", "encounter.discharged"):
        payload["type"] = r.text("encounter", "type", required=True)
        payload["department_id"] = r.text("encounter", "department_id", required=True)
        ward = r.text("encounter", "ward_id")
        if ward:
            payload["ward_id"] = ward
        admitted = r.when("encounter", "admitted_at")
        if admitted:
            payload["admitted_at"] = admitted
        ref = r.spec.field("encounter", "diagnoses")
        if ref is not None:
            codes = [value(r.msg, ref, n) for n in range(1, _occurrences(r.msg, ref.segment) + 1)]
            if any(codes):
                payload["diagnoses"] = [c for c in codes if c]
    if kind == "encounter.discharged":
        payload["discharged_at"] = r.when("encounter", "discharged_at") or _event_time(r.msg)
    r.locate(index, "encounter", ["encounter_id", "type", "department_id", "ward_id",
                                  "admitted_at", "discharged_at", "diagnoses"])
    return {k: v for k, v in payload.items() if v is not None}


def event_prefix(head: Header) -> str:
    digest = hashlib.sha256(f"{head.sender}|{head.facility}|{head.control_id}".encode()).hexdigest()
    return f"hl7-{digest[:32]}"


def map_message(session: Session, msg: hl7.Message, head: Header,
                spec: Hl7MappingSpec) -> Mapped:
    """The events of one message (ADT or ORU^R01), or its problems."""
    out = Mapped()
    r = _Reader(msg, spec, out)
    prefix, trigger = event_prefix(head), head.trigger
    occurred = _event_time(msg)

    def add(kind: str, payload: dict[str, Any] | None, suffix: str) -> None:
        if payload is not None:
            event: dict[str, Any] = {"event_id": f"{prefix}-{suffix}", "type": kind,
                                     "payload": payload}
            if occurred:
                event["occurred_at"] = occurred
            out.events.append(event)

    if head.message_code == "ORU":
        from careloop.flows.inbound.hl7_obx import observations

        pid = r.text("patient", "patient_id", required=True)
        r.locate(0, "patient", ["patient_id"])
        visit = r.text("encounter", "encounter_id") if _occurrences(msg, "PV1") else None
        for kind, payload in observations(r, pid or "", prefix, visit) if pid else []:
            add(kind, payload, str(payload.get("reading_id") or payload["result_id"])
                .rsplit("-", 1)[1])
        return out
    if trigger in ("A11", "A13"):
        pid = r.text("patient", "patient_id", required=True) or ""
        r.locate(0, "patient", ["patient_id"])
        kind = ("encounter.admission_cancelled" if trigger == "A11"
                else "encounter.discharge_cancelled")
        add(kind, _encounter(r, 0, kind, pid), "enc")
        return out
    patient = _patient(r, 0)
    if trigger == "A40":
        ref = spec.field("merge", "prior_patient_id")
        prior = value(msg, ref) if ref else ""
        if not prior:
            out.issues.append(Issue(ref.location if ref else "MRG-1", "101",
                                    "the prior patient id (MRG-1) is missing"))
        elif patient is not None:
            out.merged = prior
            known = session.get(Patient, patient["patient_id"])
            merged = list((known.attributes or {}).get("merged_ids", [])) if known else []
            patient["attributes"] = {"merged_ids": sorted({*merged, prior})}
    add("patient.upserted", patient, "pat")
    if trigger in ("A01", "A02", "A03") and patient is not None:
        kind = "encounter.discharged" if trigger == "A03" else "encounter.admitted"
        add(kind, _encounter(r, 1, kind, patient["patient_id"]), "enc")
    return out


# --- the ACK ---------------------------------------------------------------------------------

_ENCODING = "^~\\&"


def _escape(text: str) -> str:
    out = text.replace("\\", "\\E\\").replace("|", "\\F\\").replace("^", "\\S\\")
    return out.replace("&", "\\T\\").replace("~", "\\R\\").replace("\r", " ")


def _components(parts: list[str]) -> str:
    return "^".join(_escape(p) for p in parts)


def _erl(location: str) -> tuple[str, str]:
    """``PV1-3.1`` → (``PV1^1^3^1^1``, ``PV1-3.1``); ``OBX[2]-5`` → ``OBX^2^5^1``."""
    found = re.match(r"^([A-Z][A-Z0-9]{2})(?:\[(\d+)\])?(?:-(\d+)(?:\.(\d+))?(?:\.(\d+))?)?$",
                     location)
    if found is None:
        return "", location
    seg, occurrence, fld, comp, sub = found.groups()
    parts = [seg, occurrence or "1"]
    if fld:
        parts += [fld, "1"] + ([comp] if comp else []) + ([sub] if sub else [])
    return "^".join(parts), location


def build_ack(head: Header, code: str, issues: list[Issue]) -> str:
    """The ACK to ``head``'s message: ``AA``, ``AE`` or ``AR``, an ERR per issue."""
    now = now_utc().astimezone(hospital_tz())
    version = head.version if head.version in VERSIONS else "2.5"
    trigger = head.trigger if re.fullmatch(r"[A-Z0-9]{3}", head.trigger) else ""
    msh = ["MSH", _ENCODING, _components(head.receiving_app or ["CARELOOP"]),
           _components(head.receiving_facility), _components(head.sending_app),
           _components(head.sending_facility), now.strftime("%Y%m%d%H%M%S%z"), "",
           f"ACK^{trigger}^ACK" if trigger else "ACK", "CL" + secrets.token_hex(8).upper(),
           head.processing_id if head.processing_id in ("P", "T", "D") else "P", version,
           "", "", "", "", "", _escape(head.charset)]
    old = version < "2.5" and version != "2.9"
    text = "; ".join(f"{i.location}: {i.message}" for i in issues)[:200]
    msa = ["MSA", code, _escape(head.control_id)] + ([_escape(text)] if old and text else [])
    segments = ["|".join(msh).rstrip("|"), "|".join(msa)]
    for issue in issues:
        erl, where = _erl(issue.location)
        name = TABLE_0357.get(issue.code, "")
        if old:  # v2.1–2.4: ERR-1 ELD (segment^sequence^field^code&text)
            parts = [*erl.split("^")[:3], f"{issue.code}&{_escape(name)}&HL70357"]
            segments.append(f"ERR|{'^'.join(parts)}")
        else:  # v2.5+: ERR-2 location, ERR-3 code, ERR-4 severity, ERR-8 user message
            segments.append(f"ERR||{erl}|{issue.code}^{_escape(name)}^HL70357|{issue.severity}"
                            f"||||{_escape(where + ': ' + issue.message)}")
    return "\r".join(segments) + "\r"


# --- storing and processing ------------------------------------------------------------------


class _Refused(Exception):
    def __init__(self, issues: list[Issue]) -> None:
        super().__init__("refused")
        self.issues = issues


def _issue_from_problem(index: int, problem: dict[str, str], mapped: Mapped,
                        status: int) -> Issue:
    path, message = problem.get("path", "$"), problem.get("message", "")
    name = path.removeprefix("$.payload.").split(".")[0].split("[")[0]
    required = re.match(r"'(\w+)' is a required property", message)
    if required:
        name = required.group(1)
    where = mapped.locations.get((index, name), "MSH-9")
    if status == 409:
        code = "205"
    elif message.startswith("unknown "):
        code = "204" if name == "patient_id" else "103"
    else:
        code = "101" if required else "102"
    if name in PERSONAL and not message.startswith("unknown department"):
        message = ("is required" if required else "is not valid here") + \
            " (check the field and the mapping definition)"
    return Issue(where, code, f"{name}: {message}" if name not in message else message)


def _lookup(session: Session, head: Header) -> Hl7Message | None:
    if not head.control_id:
        return None
    return session.scalars(select(Hl7Message).where(
        Hl7Message.sending_application == head.sender[:180],
        Hl7Message.sending_facility == head.facility[:180],
        Hl7Message.control_id == head.control_id)).first()


def _check_header(head: Header, spec: Hl7MappingSpec | None) -> list[Issue]:
    if not head.message_code:
        return [Issue("MSH-9", "200", "no message type: is this an HL7 v2 message?")]
    if head.processing_id not in (spec.processing_ids if spec else {"P"}):
        allowed = ", ".join(sorted(spec.processing_ids)) if spec else "P"
        return [Issue("MSH-11", "202", f"processing id {head.processing_id!r} is not accepted "
                      f"here (accepted: {allowed})")]
    if head.version not in VERSIONS:
        return [Issue("MSH-12", "203", f"HL7 version {head.version!r} is not supported")]
    if head.message_code == "ADT":
        if head.trigger not in ADT_EVENTS:
            return [Issue("MSH-9.2", "201", f"ADT event {head.trigger!r} is not supported "
                          f"(supported: {', '.join(ADT_EVENTS)})")]
    elif head.message_code == "ORU":
        if head.trigger != "R01":
            return [Issue("MSH-9.2", "201", f"ORU event {head.trigger!r} is not supported "
                          "(supported: R01)")]
    else:
        return [Issue("MSH-9", "200", f"message type {head.message_code!r} is not supported "
                      "(supported: ADT, ORU^R01)")]
    if not head.control_id:
        return [Issue("MSH-10", "101", "the message control id (MSH-10) is missing")]
    return []


def _store(session: Session, head: Header, raw: bytes, codec: str, state: str, code: str,
           issues: list[Issue], ack: str, events: list[str], row: Hl7Message | None,
           merged: str | None = None) -> Hl7Message:
    if row is None:
        row = Hl7Message(sending_application=head.sender[:180],
                         sending_facility=head.facility[:180],
                         control_id=head.control_id or None, received_at=now_utc(), attempts=0)
        session.add(row)
    row.message_type = f"{head.message_code}^{head.trigger}"[:16]
    row.version, row.charset, row.raw = head.version[:16], codec, raw
    row.state, row.ack_code, row.ack = state, code, ack
    row.errors = [i.to_json() for i in issues]
    row.event_ids = events
    row.merged_patient_id = merged
    row.attempts += 1
    row.processed_at = now_utc()
    session.flush()
    return row


def _process(session: Session, raw: bytes, head: Header, source: str,
             row: Hl7Message | None) -> Outcome:
    """Everything inside one transaction; raises :class:`_Refused` to roll the events back."""
    from careloop.flows.ingest import ingest

    text, codec, issues = decode(raw, head)
    msg = None
    if text is not None:
        msg, issues = _parse(text)
    spec = mapping_for(session, head.sender) if msg is not None else None
    if not issues:
        issues = _check_header(head, spec)
    if issues or msg is None or spec is None:
        state = "rejected"
        ack = build_ack(head, "AR", issues)
        if head.control_id:
            stored = _store(session, head, raw, codec, state, "AR", issues, ack, [], row)
            return Outcome(ack, "AR", codec, stored.id)
        return Outcome(ack, "AR", codec)
    mapped = map_message(session, msg, head, spec)
    if mapped.issues:
        raise _Refused(mapped.issues)
    parked: list[Issue] = []
    for index, event in enumerate(mapped.events):
        status, body = ingest(session, event, source=source)
        if status == 202 and body.get("reason") != "unknown_patient":
            parked += [_issue_from_problem(index, p, mapped, 422) for p in body.get("errors", [])]
        elif status not in (200, 202):
            raise _Refused([_issue_from_problem(index, p, mapped, status)
                            for p in body.get("errors", [])] or [
                Issue("MSH-9", "207", f"refused ({status})")])
    if mapped.merged:
        audit.append(session, actor=source, action="hl7.patient_merged", object_type="patient",
                     object_id=mapped.events[0]["payload"]["patient_id"],
                     details={"control_id": head.control_id, "prior": "MRG-1"})
    code = "AE" if parked else "AA"
    notes = [Issue("OBX", "0", f"{mapped.skipped} result(s) without a value not recorded "
                   "(OBX-11 X, D, W, N, I or O)", "I")] if mapped.skipped else []
    ack = build_ack(head, code, parked)
    stored = _store(session, head, raw, codec, "parked" if parked else "accepted", code,
                    parked + notes, ack, [e["event_id"] for e in mapped.events], row,
                    mapped.merged)
    return Outcome(ack, code, codec, stored.id)


def receive(raw: bytes, *, engine: Engine | None = None, source: str = "hl7",
            max_bytes: int = MAX_MESSAGE_BYTES) -> Outcome:
    """Store, map, ingest and acknowledge one message (the MLLP listener and HTTP call this in
    a worker thread). A message already accepted is answered its stored ACK."""
    head = read_header(raw)
    if len(raw) > max_bytes:
        issue = Issue("MSH", "104", f"message larger than {max_bytes} bytes")
        return Outcome(build_ack(head, "AR", [issue]), "AR", "utf-8")
    try:
        try:
            return _receive_once(raw, head, engine, source)
        except IntegrityError:  # the same message stored by another connection just now
            return _receive_once(raw, head, engine, source)
    except SQLAlchemyError as exc:
        # Nothing was stored: AR (original mode) tells the sender to send it again later.
        log.error("hl7 %s from %s: not stored, the database failed (%s); answered AR",
                  head.control_id, head.sender, type(exc).__name__)
        issue = Issue("MSH", "207", "the message could not be stored just now; send it again")
        return Outcome(build_ack(head, "AR", [issue]), "AR", "utf-8")


def _receive_once(raw: bytes, head: Header, engine: Engine | None, source: str,
                  replaying: str | None = None) -> Outcome:
    refused: list[Issue] = []
    with transaction(engine) as session:
        if session.get_bind().dialect.name == "sqlite":
            # Take the write lock before reading: pysqlite begins a transaction at the first
            # write, and two connections that both read first cannot both upgrade to writing.
            session.execute(sql("UPDATE hl7_messages SET id = id WHERE 1 = 0"))
        row = _lookup(session, head)
        if row is not None and row.state in ("accepted", "parked", "rejected") \
                and row.ack is not None and not (replaying and row.state == "parked"):
            log.info("hl7 %s from %s: duplicate control id, answered the stored %s",
                     head.control_id, head.sender, row.ack_code)
            return Outcome(row.ack, row.ack_code or "AA", row.charset or "utf-8", row.id, True)
        try:
            with session.begin_nested():
                if replaying and row is not None:
                    _supersede(session, row, replaying)
                outcome = _process(session, raw, head, source, row)
        except _Refused as exc:
            refused = exc.issues
        else:
            log.info("hl7 %s %s from %s: %s", head.control_id, f"{head.message_code}^"
                     f"{head.trigger}", head.sender, outcome.code)
            return outcome
        # Refused: nothing of the events stays, the message is kept for IT to replay.
        codec = decode(raw, head)[1]
        ack = build_ack(head, "AE", refused)
        stored = _store(session, head, raw, codec, "error", "AE", refused, ack, [], row)
        log.info("hl7 %s %s from %s: AE (%s)", head.control_id,
                 f"{head.message_code}^{head.trigger}", head.sender,
                 ", ".join(f"{i.location} {i.code}" for i in refused))
        return Outcome(ack, "AE", codec, stored.id)


class Hl7ReplayError(CareloopError):
    """Raised when a message is not waiting for a replay (unknown, or not in ``error`` or
    ``parked``)."""


WAITING = ("error", "parked")


def _supersede(session: Session, row: Hl7Message, actor: str) -> None:
    """A parked message replayed with the fixed mapping: the events it parked are ``replaced``
    by those the replay maps (in the replay's savepoint: a failed replay keeps them; one that
    parks again re-opens them)."""
    from careloop.flows.models import ParkedEvent

    for item in session.scalars(select(ParkedEvent).where(
            ParkedEvent.event_id.in_(list(row.event_ids or [])),
            ParkedEvent.status == "parked")).all():
        item.status, item.resolved_at, item.resolved_by = "replaced", now_utc(), actor[:64]
    session.flush()


def settle_parked(session: Session, event_id: str) -> None:
    """One parked event of a message got through (IT created the code and retried it on the
    integration queue): when none of the message's events waits any more, the message is
    processed — its state ``accepted`` and the ACK a re-send gets ``AA``."""
    from careloop.flows.models import ParkedEvent

    if not event_id.startswith("hl7-"):
        return
    for row in session.scalars(select(Hl7Message).where(Hl7Message.state == "parked")).all():
        ids = list(row.event_ids or [])
        if event_id not in ids:
            continue
        waiting = session.scalars(select(ParkedEvent.id).where(
            ParkedEvent.event_id.in_(ids), ParkedEvent.status == "parked")).first()
        if waiting is None:
            row.state, row.ack_code, row.errors = "accepted", "AA", []
            row.ack = build_ack(read_header(bytes(row.raw)), "AA", [])
            row.processed_at = now_utc()


def replay(message_id: int, actor: str, *, engine: Engine | None = None) -> Outcome:
    """Process a failed or parked message again with the current mapping and code tables (after
    IT fixed them); audited with its outcome. The sender is not answered again: the stored state
    and ACK change (``accepted`` when it got through). A message another replay got through
    first is answered its stored ACK."""
    with transaction(engine) as session:
        row = session.get(Hl7Message, message_id)
        if row is None or row.state not in WAITING:
            raise Hl7ReplayError(f"HL7 message {message_id} is not waiting for a replay")
        raw = bytes(row.raw)
    head = read_header(raw)
    source = f"hl7:replay:{actor}"[:64]
    try:
        outcome = _receive_once(raw, head, engine, source, replaying=actor)
    except IntegrityError:  # replayed at the same moment by someone else
        outcome = _receive_once(raw, head, engine, source)
    with transaction(engine) as session:
        audit.append(session, actor=actor, action="hl7.replay", object_type="hl7_message",
                     object_id=str(message_id), details={"ack": outcome.code})
    return outcome


# --- what the integration page shows ----------------------------------------------------------

# Fields shown in clear on the page; every other field's characters are masked.
CLEAR = {"MSH": None, "EVN": {1}, "PV1": {2, 3, 10}, "DG1": {3}, "OBX": {2, 3, 6, 8},
         "OBR": {4}, "MSA": None, "ERR": None}


def masked(raw: bytes, codec: str | None) -> str:
    """The raw message for the page: structure and codes, no names, ids or values.

    ``PID|1||PATID1234^5^M11||EVERYMAN^ADAM`` → ``PID|*||*********^*^***||********^****``
    """
    text = raw.decode(codec or "utf-8", errors="replace").removeprefix("\ufeff")
    lines = []
    for segment in re.split(r"\r\n|\r|\n", text):
        if len(segment) < 4 or not _SEGMENT_ID.match(segment[:3]):
            lines.append(re.sub(r"[^|^~&\\]", "*", segment))
            continue
        sep, name = segment[3], segment[:3]
        keep = CLEAR.get(name, set())
        fields = segment.split(sep)
        shown = [f if keep is None or n == 0 or n in keep else re.sub(r"[^\^~&\\]", "*", f)
                 for n, f in enumerate(fields)]
        lines.append(sep.join(shown))
    return "\n".join(lines)


def ack_in_words(ack: str) -> list[str]:
    """``AA`` → ["AA 已接受 (accepted)"], and one line per ERR: location, code, message."""
    words = {"AA": "已接受 (accepted)", "AE": "内容有误，未处理 (error in the content)",
             "AR": "已拒收 (rejected: unsupported or unreadable)",
             "CA": "已接受 (accepted)", "CE": "内容有误 (error)", "CR": "已拒收 (rejected)"}
    try:
        msg = hl7.parse(ack.replace("\n", "\r").strip("\r"))
        code = str(msg.extract_field("MSA", 1, 1, 1, 1, 1))
        control = str(msg.extract_field("MSA", 1, 2, 1, 1, 1))
    except Exception:
        return ["the answer is not an HL7 ACK"]
    lines = [f"{code} {words.get(code, '')} — MSH-10 {control}".strip()]
    for segment in ack.split("\r"):
        if segment.startswith("ERR|"):
            fields = segment.split("|")
            detail = fields[8] if len(fields) > 8 else fields[1] if len(fields) > 1 else ""
            code_field = fields[3] if len(fields) > 3 else ""
            lines.append(f"  ERR {code_field.split('^')[0]} {hl7_unescape(detail)}")
    return lines


def hl7_unescape(text: str) -> str:
    return (text.replace("\\F\\", "|").replace("\\S\\", "^").replace("\\T\\", "&")
            .replace("\\R\\", "~").replace("\\E\\", "\\"))

