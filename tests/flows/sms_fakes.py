"""Local stand-ins for Alibaba Cloud SMS and Tencent Cloud SMS (http.server on 127.0.0.1:0).

Each recomputes the provider's request signature from the request exactly as the provider
documents it — Alibaba Cloud's ACS3-HMAC-SHA256 (V3 signature: canonical request of method,
path, sorted percent-encoded query, the signed headers, the payload's SHA-256; HMAC-SHA256 with
the AccessKey secret) and Tencent Cloud's TC3-HMAC-SHA256 (canonical request over content-type
and host, a key derived date → service → ``tc3_request`` from ``"TC3" + SecretKey``) — and
refuses a request whose signature, key, action, version, payload hash or timestamp does not
verify, answering with the provider's own error codes. A forced answer (``fake.code``) plays a
provider refusal; ``fake.sent`` keeps what was accepted.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import pytest
from sqlalchemy import Engine

from careloop.engine.bundles import import_bundle
from careloop.engine.clock import frozen_now
from careloop.engine.db import transaction
from careloop.engine.domain import Patient
from careloop.flows import egress, outbox
from careloop.flows.models import OutboxMessage

ALIYUN_KEY, ALIYUN_SECRET = "LTAI5tCareloopTest01", "aliyun-secret-for-tests-only-0001"
TENCENT_ID, TENCENT_KEY = "AKIDCareloopTest0000000001", "tencent-secret-for-tests-only-01"
TENCENT_APP = "1400123456"
SKEW = 15 * 60  # both providers refuse a request stamped further from their clock


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()


class _Fake:
    """The HTTP server part: one thread, a handler calling :meth:`handle`."""

    content_type = "application/json;charset=utf-8"

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.refused: list[str] = []
        self.code: str | None = None  # force this provider code on the next sends
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, answer = fake.handle("POST", self.path, headers, body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", fake.content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def handle(self, method: str, path: str, headers: dict[str, str],
               body: bytes) -> tuple[int, dict[str, Any]]:
        raise NotImplementedError


class FakeAliyun(_Fake):
    """Alibaba Cloud SMS ``SendSms`` (2017-05-25, RPC style, ACS3-HMAC-SHA256)."""

    def __init__(self, secret: str = ALIYUN_SECRET) -> None:
        self.secret = secret
        self.nonces: set[str] = set()
        super().__init__()

    def _error(self, status: int, code: str) -> tuple[int, dict[str, Any]]:
        self.refused.append(code)
        return status, {"Code": code, "Message": code, "RequestId": "REQ-ERR"}

    def verify(self, method: str, path: str, headers: dict[str, str], body: bytes) -> str | None:
        """The error code Alibaba Cloud answers for this request, ``None`` if it verifies."""
        auth = headers.get("authorization", "")
        algorithm, _, rest = auth.partition(" ")
        if algorithm != "ACS3-HMAC-SHA256":
            return "IncompleteSignature"
        fields = dict(part.strip().split("=", 1) for part in rest.split(",") if "=" in part)
        if fields.get("Credential") != ALIYUN_KEY:
            return "InvalidAccessKeyId.NotFound"
        signed = fields.get("SignedHeaders", "").split(";")
        required = {"host", "x-acs-action", "x-acs-content-sha256", "x-acs-date",
                    "x-acs-signature-nonce", "x-acs-version"}
        if not required <= set(signed) or signed != sorted(signed):
            return "IncompleteSignature"
        if headers.get("x-acs-content-sha256") != _sha256(body):
            return "ContentSHA256NotMatch"
        stamp = datetime.strptime(headers["x-acs-date"], "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=UTC)
        if abs(stamp.timestamp() - time.time()) > SKEW:
            return "InvalidTimeStamp.Expired"
        nonce = headers["x-acs-signature-nonce"]
        if nonce in self.nonces:
            return "SignatureNonceUsed"
        parts = urlsplit(path)
        query = sorted(parse_qsl(parts.query, keep_blank_values=True))
        canonical_query = "&".join(f"{quote(k, safe='~')}={quote(v, safe='~')}"
                                   for k, v in query)
        canonical_headers = "".join(f"{name}:{headers.get(name, '').strip()}\n"
                                    for name in signed)
        canonical = "\n".join([method, parts.path or "/", canonical_query, canonical_headers,
                               ";".join(signed), _sha256(body)])
        to_sign = f"ACS3-HMAC-SHA256\n{_sha256(canonical.encode('utf-8'))}"
        expected = hmac.new(self.secret.encode(), to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, fields.get("Signature", "")):
            return "SignatureDoesNotMatch"
        self.nonces.add(nonce)
        return None

    def handle(self, method: str, path: str, headers: dict[str, str],
               body: bytes) -> tuple[int, dict[str, Any]]:
        problem = self.verify(method, path, headers, body)
        if problem is not None:
            return self._error(400 if problem != "InvalidAccessKeyId.NotFound" else 404,
                               problem)
        if (headers.get("x-acs-action"), headers.get("x-acs-version")) != (
                "SendSms", "2017-05-25"):
            return self._error(400, "InvalidAction.NotFound")
        params = dict(parse_qsl(urlsplit(path).query, keep_blank_values=True))
        params.update(dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True)))
        for name in ("PhoneNumbers", "SignName", "TemplateCode"):
            if not params.get(name):
                return self._error(400, f"MissingParameter.{name}")
        if self.code is not None:
            self.refused.append(self.code)
            return 200, {"Code": self.code, "Message": self.code, "RequestId": "REQ-BIZ"}
        if not params["PhoneNumbers"].isdigit():
            return 200, {"Code": "isv.MOBILE_NUMBER_ILLEGAL", "Message": "非法手机号",
                         "RequestId": "REQ-BIZ"}
        try:
            template_param = json.loads(params.get("TemplateParam") or "{}")
        except ValueError:
            return 200, {"Code": "isv.INVALID_JSON_PARAM", "Message": "JSON参数不合法",
                         "RequestId": "REQ-BIZ"}
        biz_id = f"{900000 + len(self.sent)}^0"
        self.sent.append({"phone": params["PhoneNumbers"], "sign": params["SignName"],
                          "template": params["TemplateCode"], "params": template_param,
                          "out_id": params.get("OutId"), "biz_id": biz_id})
        return 200, {"Code": "OK", "Message": "OK", "BizId": biz_id, "RequestId": "REQ-OK"}


class FakeTencent(_Fake):
    """Tencent Cloud SMS ``SendSms`` (2021-01-11, TC3-HMAC-SHA256)."""

    content_type = "application/json"

    def __init__(self, secret: str = TENCENT_KEY) -> None:
        self.secret = secret
        super().__init__()

    def _error(self, code: str) -> tuple[int, dict[str, Any]]:
        self.refused.append(code)
        return 200, {"Response": {"Error": {"Code": code, "Message": code},
                                  "RequestId": "req-err"}}

    def verify(self, method: str, path: str, headers: dict[str, str], body: bytes) -> str | None:
        auth = headers.get("authorization", "")
        algorithm, _, rest = auth.partition(" ")
        if algorithm != "TC3-HMAC-SHA256":
            return "AuthFailure.SignatureFailure"
        fields = dict(part.strip().split("=", 1) for part in rest.split(",") if "=" in part)
        secret_id, _, scope = fields.get("Credential", "").partition("/")
        if secret_id != TENCENT_ID:
            return "AuthFailure.SecretIdNotFound"
        date, _, rest_scope = scope.partition("/")
        service, _, terminator = rest_scope.partition("/")
        timestamp = headers.get("x-tc-timestamp", "")
        if not timestamp.isdigit() or abs(int(timestamp) - time.time()) > 300:
            return "AuthFailure.SignatureExpire"
        if datetime.fromtimestamp(int(timestamp), UTC).strftime("%Y-%m-%d") != date \
                or service != "sms" or terminator != "tc3_request":
            return "AuthFailure.SignatureFailure"
        signed = fields.get("SignedHeaders", "").split(";")
        if "content-type" not in signed or "host" not in signed:
            return "AuthFailure.SignatureFailure"
        parts = urlsplit(path)
        canonical_headers = "".join(f"{name}:{headers.get(name, '').strip().lower()}\n"
                                    if name != "content-type" else
                                    f"{name}:{headers.get(name, '').strip()}\n"
                                    for name in signed)
        canonical = "\n".join([method, parts.path or "/", parts.query, canonical_headers,
                               ";".join(signed), _sha256(body)])
        to_sign = "\n".join(["TC3-HMAC-SHA256", timestamp, scope,
                             _sha256(canonical.encode("utf-8"))])
        key = _hmac(_hmac(_hmac(f"TC3{self.secret}".encode(), date), service), "tc3_request")
        expected = hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, fields.get("Signature", "")):
            return "AuthFailure.SignatureFailure"
        return None

    def handle(self, method: str, path: str, headers: dict[str, str],
               body: bytes) -> tuple[int, dict[str, Any]]:
        problem = self.verify(method, path, headers, body)
        if problem is not None:
            return self._error(problem)
        if (headers.get("x-tc-action"), headers.get("x-tc-version")) != (
                "SendSms", "2021-01-11"):
            return self._error("InvalidAction")
        request = json.loads(body)
        if request.get("SmsSdkAppId") != TENCENT_APP:
            return self._error("InvalidParameterValue.SdkAppIdNotExist")
        statuses = []
        for number in request.get("PhoneNumberSet") or []:
            code = self.code or ("Ok" if number.startswith("+") and number[1:].isdigit()
                                 else "InvalidParameterValue.IncorrectPhoneNumber")
            serial = f"2640:{4000 + len(self.sent)}" if code == "Ok" else ""
            if code == "Ok":
                self.sent.append({"phone": number, "sign": request.get("SignName"),
                                  "template": request.get("TemplateId"),
                                  "params": request.get("TemplateParamSet"),
                                  "session": request.get("SessionContext"),
                                  "serial": serial})
            else:
                self.refused.append(code)
            statuses.append({"SerialNo": serial, "PhoneNumber": number, "Fee": 1,
                             "SessionContext": request.get("SessionContext", ""),
                             "Code": code, "Message": code, "IsoCode": "CN"})
        return 200, {"Response": {"SendStatusSet": statuses, "RequestId": "req-ok"}}


# --- fixtures (imported by the tests/flows/test_sms_*.py modules) ---------------------------

APPS = Path(__file__).resolve().parents[2] / "app_definitions"
T0 = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
PHONE = "13912345678"
LINK_TOKEN = "AbCdEfGh1234567890xyzSMS"
LINK = f"https://fu.example.cn/f/{LINK_TOKEN}"
ALIYUN_RECEIPT_TOKEN = "aliyun-receipts-0123456789abcdef"
TENCENT_RECEIPT_TOKEN = "tencent-receipts-0123456789abcdef"


def hospital(engine: Engine, *, allow_loopback: bool = True) -> None:
    """The shipped bundle, one patient with a mobile number, the fake's host allow-listed."""
    import_bundle(APPS / "common", engine=engine)
    with transaction(engine) as session:
        session.add(Patient(id="P1", mrn="M1", name="张三", phone=PHONE, locale="zh-CN",
                            attributes={}, consents={}))
        if allow_loopback:
            egress.allow(session, "127.0.0.1", allow_private=True, note="fake SMS provider")


@pytest.fixture
def aliyun(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAliyun]:
    fake = FakeAliyun()
    hospital(engine)
    for name, value in {"CHANNEL_SMS": "aliyun_sms", "ALIYUN_SMS_ACCESS_KEY_ID": ALIYUN_KEY,
                        "ALIYUN_SMS_ACCESS_KEY_SECRET": ALIYUN_SECRET,
                        "ALIYUN_SMS_SIGN_NAME": "岭南医院", "ALIYUN_SMS_ENDPOINT": fake.url,
                        "ALIYUN_SMS_RECEIPT_TOKEN": ALIYUN_RECEIPT_TOKEN}.items():
        monkeypatch.setenv(f"CARELOOP_{name}", value)
    try:
        yield fake
    finally:
        fake.close()


@pytest.fixture
def tencent(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTencent]:
    fake = FakeTencent()
    hospital(engine)
    for name, value in {"CHANNEL_SMS": "tencent_sms", "TENCENT_SMS_SECRET_ID": TENCENT_ID,
                        "TENCENT_SMS_SECRET_KEY": TENCENT_KEY,
                        "TENCENT_SMS_SDK_APP_ID": TENCENT_APP,
                        "TENCENT_SMS_SIGN_NAME": "岭南医院", "TENCENT_SMS_ENDPOINT": fake.url,
                        "TENCENT_SMS_RECEIPT_TOKEN": TENCENT_RECEIPT_TOKEN}.items():
        monkeypatch.setenv(f"CARELOOP_{name}", value)
    try:
        yield fake
    finally:
        fake.close()


def enqueue(engine: Engine, key: str, template: str = "followup_form") -> int:
    with frozen_now(T0), transaction(engine) as session:
        return outbox.enqueue(session, template_key=template, channel="sms", patient_id="P1",
                              values={"patient_name": "张三", "department_name": "心内科",
                                      "form_link": LINK}, idempotency_key=key)


def dispatch(engine: Engine, minutes: float = 0) -> dict[str, int]:
    return outbox.dispatch_due(engine, worker="w", now=T0 + timedelta(minutes=minutes))


def row(engine: Engine, message_id: int) -> OutboxMessage:
    with transaction(engine) as session:
        found = session.get(OutboxMessage, message_id)
        assert found is not None
        session.expunge(found)
        return found
