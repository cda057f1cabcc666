"""Issue 15, HL7 v2 in: public HL7 v2 samples (tests/flows/data/hl7v2/SOURCES.txt names each
file's origin and licence) and messages written here in GB18030 with Chinese names, sent over a
real TCP socket to the MLLP listener ``careloop hl7 listen`` runs (in a thread, port 0), drive the
discharge journey: AA for good messages, AE/AR with ERR for bad ones, the same message twice
processed once, A13 cancelling the follow-ups. The department codes of the samples are mapped
the way a hospital's IT does it: by editing the ``hl7_mapping`` definition and importing it."""

from __future__ import annotations

import asyncio
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from careloop.engine.bundles import import_bundle
from careloop.engine.clock import frozen_now, hospital_tz
from careloop.engine.db import transaction
from careloop.engine.domain import Encounter, Patient
from careloop.engine.models import AuditRow, DomainEventRow
from careloop.flows.inbound import hl7 as hl7_in
from careloop.flows.inbound.hl7_cli import hl7 as hl7_command
from careloop.flows.inbound.mllp import Listener, send
from careloop.flows.models import Hl7Message
from careloop.forms.models import FormRequest

DATA = Path(__file__).parent / "data" / "hl7v2"
APPS = Path(__file__).resolve().parents[2] / "app_definitions"
MAPPING = "hl7_mappings/default.yaml"


# --- the samples, adapted the way SOURCES.txt says ---------------------------------------------


def hl7_time(at: datetime) -> str:
    return at.astimezone(hospital_tz()).strftime("%Y%m%d%H%M%S%z")


def prepare_public(raw: bytes, control_id: str, now: datetime) -> bytes:
    """BOM removed, CR segment separators, MSH-10 made unique, MSH-15/16 emptied, the
    date-times of MSH-7, EVN-2, EVN-6, PV1-44, PV1-45 moved onto the run's clock (admission D0-7d,
    discharge D0 = four days before the run, 10:00 Asia/Shanghai). Nothing else is changed."""
    local = now.astimezone(hospital_tz())
    d0 = datetime.combine(local.date() - timedelta(days=4), time(10), hospital_tz())
    moved = {("MSH", 7): d0, ("EVN", 2): d0, ("EVN", 6): d0, ("PV1", 44): d0 - timedelta(days=7),
             ("PV1", 45): d0}
    text = raw.removeprefix(b"\xef\xbb\xbf").decode("latin-1")
    segments = [s for s in re.split(r"\r\n|\r|\n", text) if s]
    out = []
    for segment in segments:
        fields = segment.split("|")
        name = fields[0]
        offset = 1 if name == "MSH" else 0  # MSH-n is fields[n - 1]
        if name == "MSH":
            fields[10 - offset] = control_id
            for n in (15, 16):
                if len(fields) > n - offset:
                    fields[n - offset] = ""
        for (seg, n), at in moved.items():
            i = n - offset
            if seg == name and len(fields) > i and fields[i]:
                fields[i] = hl7_time(at)
        out.append("|".join(fields))
    return ("\r".join(out) + "\r").encode("latin-1")


def gb_message(trigger: str, control_id: str, now: datetime, *, department: str = "0301",
               patient: str = "HIS0001", visit: str = "V20261127", name: str = "张^三",
               charset: str = "GB18030", extra: str = "") -> bytes:
    """An ADT message as a Chinese HIS sends it: GB18030, Chinese names and department."""
    d0 = datetime.combine(now.astimezone(hospital_tz()).date() - timedelta(days=4), time(10),
                          hospital_tz())
    admitted, discharged = hl7_time(d0 - timedelta(days=7)), hl7_time(d0)
    pv1_45 = discharged if trigger in ("A03", "A13") else ""
    pv1 = ["PV1", "1", "I", f"{department}^0301-12^3^心内科病区"] + [""] * 15 + [visit] + \
        [""] * 24 + [admitted, pv1_45]
    lines = [
        f"MSH|^~\\&|HIS|FUWAI|CARELOOP|PX|{hl7_time(d0)}||ADT^{trigger}^ADT_A01|{control_id}|P|"
        f"2.5||||||{charset}",
        f"EVN|{trigger}|{hl7_time(d0)}",
        f"PID|1||{patient}^^^HIS^MR||{name}||19500301|F|||北京市西城区^^北京^^100037||13800000000",
        "|".join(pv1),
        "DG1|1||I21.9^急性心肌梗死^ICD10",
    ] + ([extra] if extra else [])
    return ("\r".join(lines) + "\r").encode("gb18030" if charset != "UNICODE UTF-8" else "utf-8")


# --- the listener on a real socket ------------------------------------------------------------


class Server:
    """``careloop hl7 listen``'s listener on 127.0.0.1:0 in a thread, at the test's clock."""

    def __init__(self, engine: Engine, clock: Any) -> None:
        self.loop = asyncio.new_event_loop()

        def handle(message: bytes) -> bytes:
            with frozen_now(clock.now):
                return hl7_in.receive(message, engine=engine, source="hl7:mllp").ack_bytes()

        def too_large(start: bytes) -> bytes:
            issue = hl7_in.Issue("MSH", "104", "message too large")
            return hl7_in.build_ack(hl7_in.read_header(start), "AR", [issue]).encode()

        self.listener = Listener(handle, max_bytes=64 * 1024, too_large=too_large)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = asyncio.run_coroutine_threadsafe(
            self.listener.start("127.0.0.1", 0), self.loop).result(timeout=30)

    def send(self, raw: bytes) -> Ack:
        return Ack(send(raw, "127.0.0.1", self.port, timeout=60))

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.listener.close(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
        self.loop.close()


class Ack:
    """An ACK read field by field (its own charset from MSH-18)."""

    def __init__(self, raw: bytes) -> None:
        head = hl7_in.read_header(raw)
        codec = hl7_in.CHARSETS.get(re.sub(r"[^A-Z0-9]", "", head.charset.upper()), "utf-8")
        self.text = raw.decode(codec)
        self.segments = [s.split("|") for s in self.text.split("\r") if s]

    def seg(self, name: str) -> list[list[str]]:
        return [s for s in self.segments if s[0] == name]

    @property
    def msh(self) -> list[str]:  # msh[n - 1] is MSH-n
        return self.seg("MSH")[0]

    @property
    def code(self) -> str:
        return self.seg("MSA")[0][1]

    @property
    def control_id(self) -> str:
        return self.seg("MSA")[0][2]

    @property
    def errs(self) -> list[list[str]]:
        return self.seg("ERR")


@pytest.fixture
def server(bundles: Engine, departments: Engine, clock: Any) -> Iterator[Server]:
    running = Server(bundles, clock)
    try:
        yield running
    finally:
        running.stop()


def edit_mapping(tmp_path: Path, engine: Engine, departments: dict[str, str]) -> None:
    """What IT does: add the HIS's department codes to the mapping's code table, import."""
    app = tmp_path / "common"
    if not app.exists():
        shutil.copytree(APPS / "common", app)
    path = app / MAPPING
    lines = "".join(f'    "{code}": {target}\n' for code, target in departments.items())
    text = path.read_text("utf-8").replace("  departments: {}\n", "  departments:\n" + lines)
    path.write_text(text, "utf-8")
    import_bundle(app, engine=engine)


def count(engine: Engine, *where: Any) -> int:
    with transaction(engine) as session:
        return int(session.scalar(select(func.count()).select_from(DomainEventRow)
                                  .where(*where)) or 0)


# --- the journey -------------------------------------------------------------------------------


def test_gb18030_discharge_journey_through_the_listener(
        server: Server, bundles: Engine, sweep: Callable[[str], Any], helpers: Any,
        clock: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARELOOP_HOSPITAL_PHONE", "010-12345678")
    edit_mapping(tmp_path, bundles, {"0301": "cardiology"})
    admit = server.send(gb_message("A01", "GB-1", clock.now))
    assert admit.code == "AA", admit.text
    discharge = gb_message("A03", "GB-2", clock.now)
    first, again = server.send(discharge), server.send(discharge)
    assert first.code == again.code == "AA" and first.errs == []
    assert again.text == first.text  # the stored ACK, its own MSH-10 included
    # ACK field by field: sender and receiver swapped, MSA-2 = MSH-10, charset kept
    msh = first.msh
    assert msh[1] == "^~\\&" and (msh[2], msh[3], msh[4], msh[5]) == ("CARELOOP", "PX", "HIS",
                                                                       "FUWAI")
    assert msh[8] == "ACK^A03^ACK" and msh[10] == "P" and msh[11] == "2.5"
    assert msh[17] == "GB18030" and first.control_id == "GB-2" and msh[9] != "GB-2"
    assert count(bundles, DomainEventRow.type == "encounter.discharged") == 1
    with transaction(bundles) as session:
        patient = session.get(Patient, "HIS0001")
        assert patient is not None and patient.name == "张三" and patient.gender == "female"
        encounter = session.get(Encounter, "V20261127")
        assert encounter is not None and encounter.department_id == "cardiology"
        assert encounter.status == "discharged" and encounter.diagnoses == {"codes": ["I21.9"]}
        row = session.scalars(select(Hl7Message).where(Hl7Message.control_id == "GB-2")).one()
        assert (row.state, row.attempts, row.charset) == ("accepted", 1, "gb18030")
        assert bytes(row.raw) == discharge and len(row.event_ids) == 2

    sweep((clock.now + timedelta(minutes=1)).isoformat())  # day 3 fell due before the message
    sent = [m for m in helpers.messages(bundles) if m.template_key == "discharge_care_day3"]
    assert len(sent) == 1, [m.template_key for m in helpers.messages(bundles)]
    link = re.search(r"/f/[A-Za-z0-9_\-]+", helpers.text(bundles, sent[0]))
    assert link is not None
    from careloop.web.app import create_app

    patient_browser = TestClient(create_app())
    with frozen_now(clock.now):
        opened = patient_browser.get(link.group(0))
    assert opened.status_code == 200, opened.text[-2000:]

    cancel = server.send(gb_message("A13", "GB-3", clock.now))
    assert cancel.code == "AA", cancel.text
    with frozen_now(clock.now):
        page = patient_browser.get(link.group(0))
    assert page.status_code == 410 and "本次随访已取消，无需填写" in page.text
    with transaction(bundles) as session:
        request = session.scalars(select(FormRequest)).one()
        assert (request.status, request.closed_reason) == ("cancelled", "encounter_cancelled")


def test_gbk_and_utf8_names_and_an_undecodable_message(server: Server, bundles: Engine,
                                                       clock: Any, tmp_path: Path) -> None:
    edit_mapping(tmp_path, bundles, {"0301": "cardiology"})
    gbk = server.send(gb_message("A04", "GBK-1", clock.now, charset="GBK", patient="P-GBK",
                                 name="欧阳^娜娜"))
    utf8 = server.send(gb_message("A04", "U-1", clock.now, charset="UNICODE UTF-8",
                                  patient="P-UTF", name="李^四"))
    assert gbk.code == utf8.code == "AA"
    with transaction(bundles) as session:
        assert session.get(Patient, "P-GBK").name == "欧阳娜娜"  # type: ignore[union-attr]
        assert session.get(Patient, "P-UTF").name == "李四"  # type: ignore[union-attr]
    # GB18030 bytes announced as UTF-8: unreadable, AR naming MSH-18; only the message is kept
    wrong = gb_message("A04", "BAD-1", clock.now, patient="P-BAD").replace(b"GB18030",
                                                                         b"UNICODE UTF-8")
    ack = server.send(wrong)
    assert ack.code == "AR" and ack.errs[0][2] == "MSH^1^18^1" and ack.errs[0][3].startswith(
        "102^Data type error^HL70357") and ack.errs[0][4] == "E"
    with transaction(bundles) as session:
        assert session.get(Patient, "P-BAD") is None


def test_public_samples_ack_and_replay_after_it_maps_the_codes(
        server: Server, bundles: Engine, clock: Any, tmp_path: Path) -> None:
    def public(name: str, n: int) -> Ack:
        raw = prepare_public((DATA / name).read_bytes(), f"PUB-{n:02d}", clock.now)
        return server.send(raw)

    # Before IT maps the HIS's codes: the v2.8 admission names an unknown point of care.
    a01 = public("01-ADT_A01-v28.hl7", 1)
    assert a01.code == "AE" and a01.control_id == "PUB-01"
    (err,) = a01.errs
    assert err[2] == "PV1^1^3^1^1^1" and err[3] == "103^Table value not found^HL70357"
    assert err[4] == "E" and "unknown department 'HUH AE OMU'" in err[8]
    assert a01.msh[2:6] == ["EHRApp^1.Edu^ISO", "GHHRFacility^2.16.840.1.1122848.1.32^ISO",
                            "ADTApp", "GHHSFacility^2.16.840.1.122848.1.30^ISO"]
    assert a01.msh[8] == "ACK^A01^ACK" and a01.msh[11] == "2.8"
    with transaction(bundles) as session:  # nothing of it reached the domain tables
        assert session.get(Patient, "PATID1234") is None
        failed = session.scalars(select(Hl7Message).where(Hl7Message.control_id == "PUB-01")
                                 ).one()
        assert failed.state == "error" and failed.errors[0]["location"] == "PV1-3.1.1"

    edit_mapping(tmp_path, bundles, {"HUH AE OMU": "cardiology", "6402DH": "orthopedics",
                                     "ZFAST TRACK": "cardiology", "ABCD": "orthopedics"})
    with frozen_now(clock.now):
        replayed = hl7_in.replay(failed.id, "it_wang", engine=bundles)
    assert replayed.code == "AA"
    expected = {"02-ADT_A02-v28.hl7": "AA", "03-ADT_A08-v28.hl7": "AA",
                "04-ADT_A03-v28.hl7": "AA", "05-ADT_A13-v28.hl7": "AA",
                "06-ADT_A11-v28.hl7": "AA", "08-ADT_A04-v23.hl7": "AA",
                "09-ADT_A03-v25.hl7": "AA", "10-ADT_A40-v28.hl7": "AA"}
    for name, code in expected.items():
        n = int(name[:2])
        ack = public(name, n)
        assert ack.code == code and ack.errs == [], (name, ack.text)
        assert ack.control_id == f"PUB-{n:02d}"
    with transaction(bundles) as session:
        encounter = session.get(Encounter, "40007716")
        assert encounter is not None and encounter.status == "cancelled"  # A11 after A03, A13
        lodi = session.get(Encounter, "2008003369")
        assert lodi is not None and lodi.status == "discharged"
        assert lodi.department_id == "orthopedics"
        survivor = session.get(Patient, "12345")
        assert survivor is not None and survivor.attributes["merged_ids"] == ["56789"]
        merged = session.scalars(select(Hl7Message).where(
            Hl7Message.control_id == "PUB-10")).one()
        assert merged.merged_patient_id == "56789"
        assert session.scalars(select(AuditRow).where(
            AuditRow.action == "hl7.patient_merged")).one().object_id == "12345"
        mario = session.get(Patient, "123456789")
        assert mario is not None and mario.phone == "5555550123" and mario.name == "MARIO BROS"

    # v2.4 (hapi): PV1-2 patient class empty — AE, the v2.4 ERR-1 form (ELD)
    old = public("07-ADT_A01-v24.hl7", 7)
    assert old.code == "AE" and old.msh[11] == "2.4"
    assert old.errs[0][1] == "PV1^1^2^101&Required field missing&HL70357"
    assert old.seg("MSA")[0][3].startswith("PV1-2: ")

    # the nHapi fuzz file: unreadable — AR with an ERR, the listener still serves
    fuzz = server.send(prepare_public((DATA / "malformed-nhapi-fuzz.hl7").read_bytes(), "",
                                      clock.now))
    assert fuzz.code == "AR" and fuzz.control_id == "" and fuzz.errs
    assert fuzz.errs[0][3].split("^")[0] in {"100", "102", "200", "201", "202"}
    again = public("09-ADT_A03-v25.hl7", 9)  # a duplicate after the fuzz: served, stored ACK
    assert again.code == "AA" and again.control_id == "PUB-09"
    assert count(bundles, DomainEventRow.type == "encounter.discharged",
                 DomainEventRow.payload["encounter_id"].as_string() == "2008003369") == 1


def test_unsupported_types_versions_and_processing_ids_are_rejected(
        server: Server, clock: Any) -> None:
    base = gb_message("A04", "X-1", clock.now)
    cases = [(b"ADT^A04^ADT_A01|X-1|P|2.5", "MSH^1^9", "200", b"SIU^S12^SIU_S12|X-1|P|2.5"),
             (b"|X-1|P|2.5|", "MSH^1^11", "202", b"|X-2|T|2.5|"),
             (b"|X-1|P|2.5|", "MSH^1^12", "203", b"|X-3|P|3.0|")]
    for old, where, code, new in cases:
        ack = server.send(base.replace(old, new))
        assert ack.code == "AR", ack.text
        assert ack.errs[0][2].startswith(where) and ack.errs[0][3].startswith(code + "^")
    event = server.send(base.replace(b"ADT^A04^ADT_A01|X-1", b"ADT^A05^ADT_A05|X-4"))
    assert event.code == "AR" and event.errs[0][3].startswith("201^Unsupported event code")


def test_framing_errors_and_oversized_messages_never_stop_the_listener(
        server: Server, clock: Any, tmp_path: Path, bundles: Engine) -> None:
    import socket

    edit_mapping(tmp_path, bundles, {"0301": "cardiology"})
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as conn:
        conn.sendall(b"garbage before a frame\r\n")
        conn.sendall(b"\x0b" + b"MSH|^~\\&|" + b"X" * (70 * 1024))  # beyond max_bytes
        answer = b""
        while b"\x1c\r" not in answer:
            answer += conn.recv(65536)
        assert b"MSA|AR|" in answer and b"104^Value too long^HL70357" in answer
        conn.sendall(b"\x1c\r")  # the oversized frame ends
        conn.sendall(b"\x0b" + gb_message("A04", "F-1", clock.now) + b"\x1c\r")
        answer = b""
        while b"\x1c\r" not in answer:
            answer += conn.recv(65536)
        assert b"MSA|AA|F-1" in answer
    assert server.send(gb_message("A04", "F-2", clock.now)).code == "AA"


def test_oru_results_become_readings(server: Server, bundles: Engine, clock: Any,
                                     tmp_path: Path) -> None:
    edit_mapping(tmp_path, bundles, {"0301": "cardiology"})
    assert server.send(gb_message("A04", "L-0", clock.now)).code == "AA"
    at = hl7_time(clock.now)
    lines = [f"MSH|^~\\&|LIS|FUWAI|CARELOOP|PX|{at}||ORU^R01^ORU_R01|L-1|P|2.5.1||||||GB18030",
             "PID|1||HIS0001^^^HIS^MR||张^三", "OBR|1|||24331-1^血脂^LN",
             f"OBX|1|NM|8480-6^收缩压^LN||150|mm[Hg]^^UCUM|90-139|H|||F|||{at}",
             f"OBX|2|NM|8462-4^舒张压^LN||95|mm[Hg]^^UCUM|60-89|H|||F|||{at}",
             f"OBX|3|NM|2345-7^血糖^LN||7.8|mmol/L^^UCUM|3.9-6.1|H|||F|||{at}",
             f"OBX|4|NM|2093-3^总胆固醇^LN||5.2|mmol/L|<5.2|N|||F|||{at}"]
    ack = server.send(("\r".join(lines) + "\r").encode("gb18030"))
    assert ack.code == "AA" and ack.msh[8] == "ACK^R01^ACK"
    with transaction(bundles) as session:
        readings = {r.payload["type"]: r.payload for r in session.scalars(
            select(DomainEventRow).where(DomainEventRow.type == "reading.recorded"))}
    assert readings["blood_pressure"]["value"] == {"systolic": 150, "diastolic": 95,
                                                   "unit": "mm[Hg]",
                                                   "codes": ["8480-6", "8462-4"]}
    assert readings["glucose"]["value"] == {"value": 7.8, "code": "2345-7", "unit": "mmol/L",
                                            "reference_range": "3.9-6.1", "abnormal_flag": "H"}
    assert set(readings) == {"blood_pressure", "glucose"}  # 2093-3 is not in the table


def test_http_post_answers_the_ack(bundles: Engine, departments: Engine, clock: Any,
                                   tmp_path: Path) -> None:
    from careloop.flows.ingest import create_api_key
    from careloop.web.app import create_app

    edit_mapping(tmp_path, bundles, {"0301": "cardiology"})
    with transaction(bundles) as session:
        key = create_api_key(session, "engine")
        readonly = create_api_key(session, "reader", scopes=["readback:read"])
    client = TestClient(create_app())
    body = gb_message("A04", "H-1", clock.now)
    media = {"Content-Type": "x-application/hl7-v2+er7"}
    with frozen_now(clock.now):
        ok = client.post("/api/v1/hl7", content=body, headers={**media, "X-API-Key": key})
        assert client.post("/api/v1/hl7", content=body, headers=media).status_code == 401
        assert client.post("/api/v1/hl7", content=body,
                           headers={**media, "X-API-Key": readonly}).status_code == 403
        assert client.post("/api/v1/hl7", content=body, headers={
            "Content-Type": "application/json", "X-API-Key": key}).status_code == 415
    assert ok.status_code == 200 and ok.headers["content-type"].startswith(
        "x-application/hl7-v2+er7")
    ack = Ack(ok.content)
    assert ack.code == "AA" and ack.control_id == "H-1" and ack.msh[17] == "GB18030"


def test_integration_page_masks_and_replays(server: Server, bundles: Engine, clock: Any,
                                            tmp_path: Path) -> None:
    from careloop.web.app import create_app
    from tests.flows.test_integration_queue import _csrf, _sign_in

    bad = server.send(gb_message("A03", "P-1", clock.now, department="0999",
                                 patient="SECRET42", name="王^秘密"))
    assert bad.code == "AE" and bad.errs[0][2] == "PV1^1^3^1^1^1"
    client = TestClient(create_app())
    _sign_in(client, "it_admin")
    with frozen_now(clock.now):
        page = client.get("/admin/integration")
    assert page.status_code == 200
    assert "王" not in page.text and "秘密" not in page.text and "SECRET42" not in page.text
    assert "13800000000" not in page.text and "hl7.page" not in page.text
    assert "hl7.type" not in page.text and "hl7.state" not in page.text
    assert "处理失败" in page.text and "出院" in page.text and "unknown department" in page.text
    assert "PV1|*|I|0999^" in page.text  # structure and codes shown, the patient masked

    edit_mapping(tmp_path, bundles, {"0999": "cardiology"})
    (row_id,) = re.findall(r'data-hl7-failed="(\d+)"', page.text)
    with frozen_now(clock.now):
        done = client.post(f"/admin/integration/hl7/{row_id}/replay",
                           data={"csrf_token": _csrf(page.text)}, follow_redirects=False)
        after = client.get(done.headers["location"])
    assert done.status_code == 303 and "消息已接受" in after.text
    assert 'data-hl7-failed="' not in after.text
    with transaction(bundles) as session:
        assert session.get(Patient, "SECRET42") is not None
        assert session.scalars(select(AuditRow).where(AuditRow.action == "hl7.replay")).one()


def test_send_command_prints_the_ack_in_words(server: Server, clock: Any, tmp_path: Path,
                                              bundles: Engine) -> None:
    edit_mapping(tmp_path, bundles, {"0301": "cardiology"})
    good = tmp_path / "a04.hl7"
    good.write_bytes(gb_message("A04", "S-1", clock.now).replace(b"\r", b"\n"))
    result = CliRunner().invoke(hl7_command, ["send", str(good), "--port", str(server.port)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("AA 已接受 (accepted) — MSH-10 S-1")
    bad = tmp_path / "a03.hl7"
    bad.write_bytes(gb_message("A03", "S-2", clock.now, department="0999"))
    result = CliRunner().invoke(hl7_command, ["send", str(bad), "--port", str(server.port)])
    assert result.exit_code == 1 and result.output.startswith("AE ")
    assert "ERR 103 PV1-3.1.1: department_id: unknown department '0999'" in result.output


def test_concurrent_copies_of_one_message_are_processed_once(
        server: Server, bundles: Engine, clock: Any, tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    edit_mapping(tmp_path, bundles, {"0301": "cardiology"})
    assert server.send(gb_message("A01", "C-0", clock.now)).code == "AA"
    message = gb_message("A03", "C-1", clock.now)
    with ThreadPoolExecutor(max_workers=4) as pool:
        acks = list(pool.map(lambda _: server.send(message), range(4)))
    assert {a.code for a in acks} == {"AA"} and len({a.text for a in acks}) == 1
    assert count(bundles, DomainEventRow.type == "encounter.discharged") == 1
    with transaction(bundles) as session:
        assert session.scalars(select(func.count()).select_from(Hl7Message).where(
            Hl7Message.control_id == "C-1")).one() == 1


def test_careloop_hl7_listen_command_serves_a_real_socket(tmp_path: Path, clock: Any) -> None:
    """The command itself, in its own process, on a database of its own (a SQLite file: the
    process cannot be pointed at the suite's PostgreSQL schema): prints the port it bound,
    stores and acknowledges, answers a re-send with the stored ACK, stops cleanly on SIGTERM,
    and logs nothing personal."""
    import os
    import selectors
    import signal
    import subprocess
    import sys

    from careloop.engine.db import make_engine
    from careloop.engine.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'listener.db'}"
    own = make_engine(url)
    upgrade(own)
    env = {**os.environ, "CARELOOP_DATABASE_URL": url}
    proc = subprocess.Popen([sys.executable, "-m", "careloop", "hl7", "listen", "--host",
                             "127.0.0.1", "--port", "0"], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        assert sel.select(timeout=120), "the listener printed nothing"
        line = proc.stdout.readline()
        port = int(re.search(r"127\.0\.0\.1:(\d+)", line).group(1))  # type: ignore[union-attr]
        raw = gb_message("A04", "CMD-1", clock.now, patient="P-CMD")
        first = Ack(send(raw, "127.0.0.1", port, timeout=120))
        again = Ack(send(raw, "127.0.0.1", port, timeout=120))
        assert first.code == "AA" and again.text == first.text, first.text
        with transaction(own) as session:
            patient = session.get(Patient, "P-CMD")
            assert patient is not None and patient.name == "张三"
            assert session.scalars(select(func.count()).select_from(Hl7Message)).one() == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        own.dispose()
    assert proc.returncode == 0, err
    assert "张" not in err and "P-CMD" not in err and "13800000000" not in err


def test_a_parked_message_shows_processed_once_it_gets_through(
        bundles: Engine, departments: Engine, clock: Any, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``CARELOOP_UNKNOWN_CODES=park``: a discharge naming an unknown point of care is kept
    (AE, state parked). IT either creates the code and retries the parked event on the queue, or
    maps the code and replays the message: either way the message then reads 已处理 and a re-send
    of it is answered AA."""
    from careloop.engine.domain import Department
    from careloop.flows.ingest import retry_parked
    from careloop.flows.models import ParkedEvent
    from careloop.web.app import create_app
    from tests.flows.test_integration_queue import _csrf, _sign_in

    monkeypatch.setenv("CARELOOP_UNKNOWN_CODES", "park")

    def receive(raw: bytes) -> Ack:
        with frozen_now(clock.now):
            return Ack(hl7_in.receive(raw, engine=bundles).ack_bytes())

    def state(control_id: str) -> str:
        with transaction(bundles) as session:
            return session.scalars(select(Hl7Message.state).where(
                Hl7Message.control_id == control_id)).one()

    first = gb_message("A03", "K-1", clock.now, department="0777")
    assert receive(first).code == "AE" and state("K-1") == "parked"
    with transaction(bundles) as session:  # IT creates the code, retries the parked event
        session.add(Department(id="0777", name={"zh-CN": "老年科", "en": "Geriatrics"}))
        session.flush()
        item = session.scalars(select(ParkedEvent).where(ParkedEvent.status == "parked")).one()
        with frozen_now(clock.now):
            assert retry_parked(session, item.id, "it_wang")[0] == 200
    assert state("K-1") == "accepted"
    assert receive(first).code == "AA"  # the sender re-sends: answered as processed

    second = gb_message("A03", "K-2", clock.now, department="0888", patient="HIS0002",
                        visit="V2")
    assert receive(second).code == "AE" and state("K-2") == "parked"
    client = TestClient(create_app())
    _sign_in(client, "it_admin")
    with frozen_now(clock.now):
        page = client.get("/admin/integration")
    (row_id,) = re.findall(r'data-hl7-failed="(\d+)"', page.text)  # K-1 is no longer there
    assert "暂存" in page.text
    with frozen_now(clock.now):  # replayed before the mapping is fixed: kept as it was
        assert hl7_in.replay(int(row_id), "it_wang", engine=bundles).code == "AE"
    assert state("K-2") == "parked"
    with transaction(bundles) as session:
        assert len(session.scalars(select(ParkedEvent).where(
            ParkedEvent.status == "parked")).all()) == 1
    edit_mapping(tmp_path, bundles, {"0888": "orthopedics"})
    with frozen_now(clock.now):
        done = client.post(f"/admin/integration/hl7/{row_id}/replay",
                           data={"csrf_token": _csrf(page.text)}, follow_redirects=False)
        after = client.get(done.headers["location"])
    assert "消息已接受" in after.text and 'data-hl7-failed="' not in after.text
    assert state("K-2") == "accepted" and after.text.count("已处理") >= 2
    with transaction(bundles) as session:
        assert session.get(Encounter, "V2").department_id == "orthopedics"  # type: ignore[union-attr]
        assert session.scalars(select(ParkedEvent.status).where(
            ParkedEvent.status == "parked")).all() == []
    assert receive(second).code == "AA"
