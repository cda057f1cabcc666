"""Tencent Cloud SMS (腾讯云短信, ``tencent_sms``) through the official SDK
(``tencentcloud-sdk-python-sms``, API 2021-01-11), which signs each request with
TC3-HMAC-SHA256.

Settings (environment): ``CARELOOP_TENCENT_SMS_SECRET_ID`` / ``_SECRET_KEY`` (a CAM user
allowed ``sms:SendSms``), ``_SDK_APP_ID`` (the SMS application, 1400…), ``_SIGN_NAME`` (the
approved signature, 签名), ``_REGION`` (default ``ap-guangzhou``), ``_ENDPOINT`` (default
``https://sms.tencentcloudapi.com``; its host must be on the outbound allow-list) and
``_RECEIPT_TOKEN`` (the shared token of the receipt URL).

A template's ``providers.tencent_sms`` entry: ``{template_id: "1234567", params: ["{{
patient_name }}", …]}`` — the approved template id and its numbered parameters ({1}, {2} …) in
order. Numbers go in E.164 (``+8613800000000``); ``SessionContext`` carries the idempotency key
(echoed back, not deduplicated); the answer's ``SerialNo`` is the provider's reference, which
the status callback (``sid``) names again.

Status callbacks: the console's 「回执与回复配置 → 状态回执」 URL receives a JSON array of
``{user_receive_time, nationcode, mobile, report_status: SUCCESS|FAIL, errmsg, description,
sid}`` and expects ``{"result": 0, "errmsg": "OK"}``. Tencent Cloud signs nothing in that
callback, so Careloop requires the shared token in the URL:
``https://<careloop>/channels/tencent_sms/receipts?token=<token>``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, ClassVar
from urllib.parse import urlsplit

from sqlalchemy.orm import Session

from careloop.flows.callbacks import Answer, Inbound
from careloop.flows.channel import (
    ChannelError,
    Outbound,
    RetryPolicy,
    SendResult,
    Timeouts,
)
from careloop.flows.sms.common import (
    ReportFormat,
    Rule,
    SmsChannel,
    check_endpoint,
    classify,
    e164,
    quiet_request_logs,
    receive_reports,
)

log = logging.getLogger("careloop.flows.sms.tencent")

# Tencent Cloud's codes (``SendStatusSet[].Code`` or ``Response.Error.Code``) → reason; the
# first matching rule wins, so the specific ones come first
RULES: tuple[Rule, ...] = (
    Rule(r"ClientNetworkError|ServerNetworkError", "gateway_unreachable", True),
    Rule(r"LimitExceeded\..*|RequestLimitExceeded.*", "sms_throttled", True),
    Rule(r"FailedOperation\.InsufficientBalanceInSmsPackage|ResourceInsufficient.*",
         "sms_balance", True),
    Rule(r"AuthFailure\..*|UnauthorizedOperation\..*|"
         r"FailedOperation\.(SignatureIncorrectOrUnapproved|MissingSignature.*)|"
         r"InvalidParameterValue\.SdkAppIdNotExist", "sms_credentials_refused", True),
    Rule(r"InvalidParameterValue\.IncorrectPhoneNumber|FailedOperation\.PhoneNumber.*|"
         r"UnsupportedOperation\..*PhoneNumber.*|FailedOperation\.PhoneNumberInBlacklist",
         "sms_number_invalid", False),
    Rule(r"FailedOperation\.ContainSensitiveWord|InvalidParameterValue\.ProhibitedUse.*|"
         r"FailedOperation\.(JsonParseFail|FailResolvePacket)", "sms_content_blocked", False),
    Rule(r"FailedOperation\..*Template.*|InvalidParameterValue\..*|MissingParameter\..*|"
         r"InvalidParameter\..*", "sms_template_refused", False),
    Rule(r"InternalError.*|FailedOperation\..*", "sms_provider_error", True),
)


class TencentSms(SmsChannel):
    name = "tencent_sms"
    title: ClassVar[dict[str, str]] = {"zh-CN": "腾讯云短信", "en": "Tencent Cloud SMS"}
    options_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "additionalProperties": False,
        "required": ["secret_id", "secret_key", "sdk_app_id", "sign_name", "endpoint"],
        "properties": {
            "secret_id": {"type": "string", "minLength": 8,
                          "x-env": "CARELOOP_TENCENT_SMS_SECRET_ID"},
            "secret_key": {"type": "string", "minLength": 8,
                           "x-env": "CARELOOP_TENCENT_SMS_SECRET_KEY"},
            "sdk_app_id": {"type": "string", "pattern": "^[0-9]{6,12}$",
                           "x-env": "CARELOOP_TENCENT_SMS_SDK_APP_ID"},
            "sign_name": {"type": "string", "minLength": 2, "maxLength": 20,
                          "x-env": "CARELOOP_TENCENT_SMS_SIGN_NAME"},
            "region": {"type": "string", "pattern": "^[a-z]+(-[a-z0-9]+)+$",
                       "default": "ap-guangzhou", "x-env": "CARELOOP_TENCENT_SMS_REGION"},
            "endpoint": {"type": "string", "pattern": "^https?://[^/?#]+/?$",
                         "default": "https://sms.tencentcloudapi.com",
                         "x-env": "CARELOOP_TENCENT_SMS_ENDPOINT"},
            "receipt_token": {"type": "string", "minLength": 16,
                              "x-env": "CARELOOP_TENCENT_SMS_RECEIPT_TOKEN"}}}
    template_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "additionalProperties": False, "required": ["template_id"],
        "properties": {
            "template_id": {"type": "string", "pattern": "^[0-9]+$"},
            "params": {"type": "array", "items": {"type": "string"}, "maxItems": 10}}}
    secret_options = ("secret_key", "receipt_token")
    receipts = True
    idempotent = False  # SessionContext is echoed, never deduplicated
    retry = RetryPolicy(horizon=timedelta(hours=6), base=timedelta(minutes=1),
                        cap=timedelta(minutes=30))
    timeouts = Timeouts(connect=5, read=10)

    def send(self, message: Outbound, idempotency_key: str) -> SendResult:
        entry = message.provider
        if not entry or not entry.get("template_id"):
            raise ChannelError(f"message {message.id}: its template has no approved "
                               "Tencent Cloud SMS template (providers.tencent_sms)",
                               "no_provider_template", retryable=False)
        options = self.options()
        number = e164(message.address, message.id)
        check_endpoint(str(options["endpoint"]), message.id)
        quiet_request_logs()
        try:
            from tencentcloud.common.exception.tencent_cloud_sdk_exception import (
                TencentCloudSDKException,
            )
            from tencentcloud.sms.v20210111 import models
        except ImportError as exc:
            raise self.sdk_missing(message.id, exc) from None

        request = models.SendSmsRequest()
        request.PhoneNumberSet = [number]
        request.SmsSdkAppId = str(options["sdk_app_id"])
        request.SignName = str(options["sign_name"])
        request.TemplateId = str(entry["template_id"])
        request.TemplateParamSet = [str(p) for p in entry.get("params") or []]
        request.SessionContext = idempotency_key[:512]
        try:
            response = self._client(options).SendSms(request)
        except TencentCloudSDKException as exc:
            raise self._refused(message.id, str(exc.get_code() or "ClientNetworkError")) \
                from None
        except Exception as exc:
            raise ChannelError(f"message {message.id}: Tencent Cloud SMS unreachable "
                               f"({type(exc).__name__})", "gateway_unreachable") from None
        statuses = list(response.SendStatusSet or [])
        if len(statuses) != 1:
            raise self._refused(message.id, "no SendStatus")
        status = statuses[0]
        if str(status.Code) != "Ok" or not status.SerialNo:
            raise self._refused(message.id, str(status.Code or "no SerialNo"))
        return SendResult("delivered", str(status.SerialNo))

    def _refused(self, message_id: int, code: str) -> ChannelError:
        reason, retryable = classify(code, RULES)
        log.warning("outbox message %s: Tencent Cloud SMS refused it (%s)", message_id, code)
        return ChannelError(f"message {message_id}: Tencent Cloud SMS refused it: {code}",
                            reason, retryable=retryable)

    def _client(self, options: dict[str, Any]) -> Any:
        from tencentcloud.common.credential import Credential
        from tencentcloud.common.profile.client_profile import ClientProfile
        from tencentcloud.common.profile.http_profile import HttpProfile
        from tencentcloud.sms.v20210111.sms_client import SmsClient

        endpoint = urlsplit(str(options["endpoint"]))
        http = HttpProfile(protocol=endpoint.scheme, endpoint=endpoint.netloc,
                           reqTimeout=int(self.timeouts.connect + self.timeouts.read))
        return SmsClient(Credential(str(options["secret_id"]), str(options["secret_key"])),
                         str(options["region"]), ClientProfile(httpProfile=http))

    # --- status callbacks ----------------------------------------------------------------

    def callback(self, session: Session, hook: str, request: Inbound) -> Answer:
        """``POST /channels/tencent_sms/receipts?token=…``: a batch of status reports."""
        return receive_reports(session, self, hook, request, REPORTS)


def _check(item: Mapping[str, Any]) -> str | None:
    if not isinstance(item.get("sid"), str) or not item["sid"]:
        return "sid: missing"
    if item.get("report_status") not in ("SUCCESS", "FAIL"):
        return "report_status: expected SUCCESS or FAIL"
    return None


# Tencent Cloud's callback: [{user_receive_time, nationcode, mobile, report_status, errmsg,
# description, sid}], answered {"result": 0, "errmsg": "OK"}.
REPORTS = ReportFormat(
    ref="sid", time="user_receive_time", code="errmsg", words="description",
    failed=lambda report: report["report_status"] != "SUCCESS", check=_check,
    ok=lambda: {"result": 0, "errmsg": "OK"}, bad=lambda problem: {"result": 1, "errmsg": problem})
