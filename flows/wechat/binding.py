"""Binding a patient's WeChat openid by a QR code, and what the official account pushes.

    staff print the binding sheet ──▶ one-time token (stored hashed, 30 days)
    or the patient's discharge paper (/d/{token}) ──▶ the same, the token signed from the
        link secret and the document link (:func:`paper_binding`)
        account API configured: qrcode/create QR_STR_SCENE "bind:<token>" ──▶ QR of its URL
        not configured: QR of /wechat/bind/<token>, a page that explains
    patient scans ──▶ WeChat pushes subscribe (EventKey "qrscene_bind:<token>") or SCAN
        (EventKey "bind:<token>") to POST /channels/wechat_mp/events, signed with the account's
        token ──▶ patient.attributes["wechat_openid"], consents["wechat"] = true, audited
    TEMPLATESENDJOBFINISH / subscribe_msg_sent_event ──▶ record_receipt on the message

Every push is verified (``signature`` = sha1 of the sorted token, timestamp and nonce) before
its body is read; the body is XML of bounded size without a DOCTYPE (no entities).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time as walltime
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from careloop.engine import audit, links
from careloop.engine.clock import now_utc
from careloop.engine.domain import Patient
from careloop.engine.errors import CareloopError
from careloop.engine.hospital import hospital_name
from careloop.flows.channel import ChannelError
from careloop.flows.receipts import record_receipt
from careloop.flows.wechat.channels import WECHAT_MP
from careloop.flows.wechat.models import WechatBinding

BINDING_DAYS = 30  # the longest a temporary QR scene lives (2 592 000 s)
MAX_BODY = 64 * 1024
SCENE_PREFIX = "bind:"


class BadPush(CareloopError):
    """A push that is not the account's (bad signature) or not readable."""


def signature(token: str, timestamp: str, nonce: str) -> str:
    """WeChat's server signature: sha1 of the token, timestamp and nonce sorted and joined."""
    return hashlib.sha1("".join(sorted([token, timestamp, nonce])).encode("utf-8")).hexdigest()


def verify(token: str, sig: str, timestamp: str, nonce: str) -> None:
    if not (sig and timestamp and nonce) or len(timestamp) > 16 or len(nonce) > 64:
        raise BadPush("signature, timestamp and nonce are required")
    if not hmac.compare_digest(signature(token, timestamp, nonce), sig.lower()):
        raise BadPush("the signature does not match the account's token")


def parse(body: bytes) -> dict[str, str]:
    """The push's top-level fields (and ``List`` items of a subscribe-message event flattened
    as ``List.<n>.<field>``)."""
    if len(body) > MAX_BODY:
        raise BadPush("the push is too large")
    if b"<!DOCTYPE" in body.upper() or b"<!ENTITY" in body.upper():
        raise BadPush("the push declares a document type")
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError as exc:
        raise BadPush(f"the push is not XML (line {exc.position[0]}, "
                      f"column {exc.position[1]})") from exc
    fields: dict[str, str] = {}
    for child in root:
        if len(child):
            items = child.findall(".//List") or [child]
            for n, item in enumerate(items):
                for leaf in item:
                    fields[f"List.{n}.{leaf.tag}"] = (leaf.text or "").strip()
        else:
            fields[child.tag] = (child.text or "").strip()
    return fields


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


@dataclass(frozen=True, slots=True)
class BindingSheet:
    """What the printed sheet shows: the QR code's content and whether it opens the account."""

    qr_content: str
    via_account: bool
    expires_at_days: int


def _sheet(token: str) -> tuple[str, BindingSheet]:
    """The configured account's app id ("" without one) and what the QR code for ``token``
    carries: the account's scene QR URL, else the page that explains."""
    try:
        app_id = str(WECHAT_MP.options()["app_id"])
    except ChannelError:
        app_id = ""
    if app_id:
        return app_id, BindingSheet(WECHAT_MP.create_qr(SCENE_PREFIX + token,
                                                        BINDING_DAYS * 86400), True, BINDING_DAYS)
    return app_id, BindingSheet(links.absolute(f"/wechat/bind/{token}"), False, BINDING_DAYS)


def new_binding(session: Session, patient_id: str, actor: str) -> BindingSheet:
    """A one-time binding token for the patient and the content of its QR code (the official
    account's scene when its API is configured, else the page that explains)."""
    token = secrets.token_urlsafe(18)
    # the account is asked first: its access token may need a write of its own
    # (tokens.py), which must not wait behind this transaction's
    app_id, sheet = _sheet(token)
    session.add(WechatBinding(token_hash=_hash(token), patient_id=patient_id, app_id=app_id,
                              created_by=actor[:64], created_at=now_utc(),
                              expires_at=now_utc() + timedelta(days=BINDING_DAYS)))
    session.flush()
    return sheet


def paper_binding(session: Session, patient_id: str, seed: str) -> BindingSheet | None:
    """The binding QR printed on a discharge paper (the patient's discharge-summary page):
    its token is signed from the installation's link secret and ``seed`` (the document link's
    hash), so the page shows the same QR each time and the database keeps only the token's
    hash; it expires like a printed sheet's and works once. ``None`` when the patient is bound
    already or this paper's QR was used or expired. Call it before the transaction writes: the
    account may be asked for its QR (:meth:`WeChatOfficialAccount.create_qr`).

    Raises:
        ChannelError: the account is configured and could not make the QR code.
    """
    patient = session.get(Patient, patient_id)
    if patient is None or patient.attributes.get("wechat_openid"):
        return None
    digest = hmac.new(links.link_secret(session), f"wechat-bind:{seed}".encode(),
                      hashlib.sha256).digest()
    token = base64.urlsafe_b64encode(digest[:18]).decode("ascii")
    row = session.scalars(select(WechatBinding).where(
        WechatBinding.token_hash == _hash(token))).first()
    if row is not None and (row.used_at is not None or row.expires_at <= now_utc()):
        return None
    app_id, sheet = _sheet(token)
    if row is None:
        session.add(WechatBinding(token_hash=_hash(token), patient_id=patient_id, app_id=app_id,
                                  created_by="discharge_paper", created_at=now_utc(),
                                  expires_at=now_utc() + timedelta(days=BINDING_DAYS)))
        session.flush()
    return sheet


def binding_state(session: Session, token: str) -> Literal["open", "used", "expired",
                                                           "unknown"]:
    row = session.scalars(select(WechatBinding).where(
        WechatBinding.token_hash == _hash(token))).first()
    if row is None:
        return "unknown"
    if row.used_at is not None:
        return "used"
    return "expired" if row.expires_at <= now_utc() else "open"


Outcome = Literal["bound", "used", "expired", "unknown", "receipt", "ignored"]


def handle(session: Session, fields: dict[str, str]) -> Outcome:
    """Act on one verified push."""
    if fields.get("MsgType") != "event":
        return "ignored"
    event = fields.get("Event", "")
    openid = fields.get("FromUserName", "")
    if event in ("subscribe", "SCAN"):
        key = fields.get("EventKey", "")
        key = key.removeprefix("qrscene_")
        if not key.startswith(SCENE_PREFIX):
            return "ignored"  # an ordinary follow, or another scene
        return _bind(session, key.removeprefix(SCENE_PREFIX), openid)
    if event == "TEMPLATESENDJOBFINISH":
        status = fields.get("Status", "")
        state: Literal["delivered", "failed"] = "delivered" if status == "success" \
            else "failed"
        found = record_receipt(session, channel_type=WECHAT_MP.name,
                               provider_ref=fields.get("MsgID", ""), state=state,
                               detail=status[:64])
        return "receipt" if found is not None else "ignored"
    if event == "subscribe_msg_sent_event":
        code = fields.get("List.0.ErrorCode", "")
        found = record_receipt(session, channel_type=WECHAT_MP.name,
                               provider_ref=fields.get("List.0.MsgID", ""),
                               state="delivered" if code == "0" else "failed",
                               detail=fields.get("List.0.ErrorStatus", "")[:64] or None)
        return "receipt" if found is not None else "ignored"
    return "ignored"


def _bind(session: Session, token: str, openid: str) -> Outcome:
    row = session.scalars(select(WechatBinding).where(
        WechatBinding.token_hash == _hash(token)).with_for_update()).first()
    if row is None:
        return "unknown"
    patient = session.get(Patient, row.patient_id, with_for_update=True)
    if patient is None or not openid:
        return "unknown"
    if row.used_at is not None:
        # WeChat pushes again when it did not hear back within 5 s: the same scan is answered
        # as the first one was, and bound (and audited) once
        return "bound" if patient.attributes.get("wechat_openid") == openid else "used"
    if row.expires_at <= now_utc():
        return "expired"
    previous = patient.attributes.get("wechat_openid")
    patient.attributes = {**patient.attributes, "wechat_openid": openid}
    patient.consents = {**patient.consents, "wechat": True}
    row.used_at = now_utc()
    audit.append(session, actor="wechat", action="patient.wechat_bound",
                 object_type="patient", object_id=patient.id, patient_id=patient.id,
                 details={"zh-CN": ("患者扫描出院资料上的二维码，更换了接收随访消息的微信"
                                    if previous else
                                    "患者扫描出院资料上的二维码，绑定了微信，并同意通过微信接收随访消息"),
                          "en": ("The patient scanned the QR code on the discharge papers and "
                                 "changed the WeChat account that receives follow-up messages"
                                 if previous else
                                 "The patient scanned the QR code on the discharge papers, "
                                 "bound WeChat and agreed to receive follow-up messages by "
                                 "WeChat"),
                          "binding_id": row.id, "printed_by": row.created_by})
    return "bound"


REPLIES = {
    "bound": {"zh-CN": "绑定成功。{hospital}的出院随访问卷和提醒将通过本公众号发送给您。",
              "en": "You are connected. {hospital} will send your follow-up forms and reminders "
                    "through this account."},
    "used": {"zh-CN": "这个二维码已经用过了。"
                      "如需更换接收消息的微信，请联系{hospital}重新打印二维码。",
             "en": "This QR code has already been used. To change the WeChat account, ask "
                   "{hospital} to print a new one."},
    "expired": {"zh-CN": "这个二维码已过期，请联系{hospital}重新打印。",
                "en": "This QR code has expired; please ask {hospital} to print a new one."},
    "unknown": {"zh-CN": "无法识别这个二维码，请联系{hospital}。",
                "en": "This QR code was not recognised; please contact {hospital}."},
}


def reply(fields: dict[str, str], outcome: Outcome, locale: str = "zh-CN") -> str:
    """The passive reply the account shows the patient after a binding scan (``success`` —
    nothing shown — for every other push)."""
    texts = REPLIES.get(outcome)
    if texts is None:
        return "success"
    content = texts[locale].format(hospital=hospital_name(locale))
    return ("<xml><ToUserName><![CDATA[{to}]]></ToUserName>"
            "<FromUserName><![CDATA[{me}]]></FromUserName><CreateTime>{at}</CreateTime>"
            "<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{text}]]></Content></xml>"
            ).format(to=_cdata(fields.get("FromUserName", "")),
                     me=_cdata(fields.get("ToUserName", "")), at=int(walltime.time()),
                     text=_cdata(content))


def _cdata(text: str) -> str:
    return text.replace("]]>", "")
