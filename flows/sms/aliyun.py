"""Alibaba Cloud SMS (阿里云短信服务, ``aliyun_sms``) through the official SDK
(``alibabacloud_dysmsapi20170525`` on ``alibabacloud_tea_openapi``), which signs each request
with ACS3-HMAC-SHA256.

Settings (environment): ``CARELOOP_ALIYUN_SMS_ACCESS_KEY_ID`` / ``_ACCESS_KEY_SECRET`` (a RAM
user allowed ``dysms:SendSms``), ``_SIGN_NAME`` (the approved signature, 签名), ``_REGION``
(default ``cn-hangzhou``), ``_ENDPOINT`` (default ``https://dysmsapi.aliyuncs.com``; its host
must be on the outbound allow-list) and ``_RECEIPT_TOKEN`` (the shared token of the receipt URL).

A template's ``providers.aliyun_sms`` entry: ``{template_code: SMS_123456789, params: {name:
"{{ patient_name }}", …}}`` — the approved template code and its named parameters, sent as
``TemplateParam``. ``OutId`` is the message's idempotency key; the answer's ``BizId`` is the
provider's reference, which the status report (``biz_id``) names again.

Status reports: the console's 「HTTP批量推送」 posts a JSON array of ``{phone_number, send_time,
report_time, success, err_code, err_msg, sms_size, biz_id, out_id}`` and expects ``{"code": 0,
"msg": "接收成功"}``. Alibaba Cloud signs nothing in that push, so Careloop requires the shared
token in the URL: ``https://<careloop>/channels/aliyun_sms/receipts?token=<token>``.
"""

from __future__ import annotations

import json
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

log = logging.getLogger("careloop.flows.sms.aliyun")

# Alibaba Cloud's codes (SendSms ``Code``, or the error of a refused request) → reason
RULES: tuple[Rule, ...] = (
    Rule(r"isv\.(BUSINESS_LIMIT_CONTROL|DAY_LIMIT_CONTROL|MONTH_LIMIT_CONTROL)|Throttling.*",
         "sms_throttled", True),
    Rule(r"isv\.(AMOUNT_NOT_ENOUGH|OUT_OF_SERVICE)", "sms_balance", True),
    Rule(r"isv\.(SMS_SIGNATURE_ILLEGAL|SMS_SIGN_ILLEGAL|SIGN_NAME_ILLEGAL|ACCOUNT_NOT_EXISTS|"
         r"ACCOUNT_ABNORMAL)|isp\.RAM_PERMISSION_DENY|InvalidAccessKeyId.*|"
         r"SignatureDoesNotMatch|IncompleteSignature|Forbidden.*|MissingSecurityToken",
         "sms_credentials_refused", True),
    Rule(r"isv\.(MOBILE_NUMBER_ILLEGAL|MOBILE_COUNT_OVER_LIMIT|DENY_PHONE_NUMBER)",
         "sms_number_invalid", False),
    Rule(r"isv\.(BLACK_KEY_CONTROL_LIMIT|PARAM_NOT_SUPPORT_URL|SMS_CONTENT_ILLEGAL)",
         "sms_content_blocked", False),
    Rule(r"isv\.(SMS_TEMPLATE_ILLEGAL|TEMPLATE_MISSING_PARAMETERS|TEMPLATE_PARAMS_ILLEGAL|"
         r"PARAM_LENGTH_LIMIT|INVALID_JSON_PARAM|INVALID_PARAMETERS|TEMPLATE_COUNT_OVER_LIMIT)",
         "sms_template_refused", False),
    Rule(r"isp\..*|InternalError.*|ServiceUnavailable.*", "sms_provider_error", True),
)


class AliyunSms(SmsChannel):
    name = "aliyun_sms"
    title: ClassVar[dict[str, str]] = {"zh-CN": "阿里云短信", "en": "Alibaba Cloud SMS"}
    options_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "additionalProperties": False,
        "required": ["access_key_id", "access_key_secret", "sign_name", "endpoint"],
        "properties": {
            "access_key_id": {"type": "string", "minLength": 8,
                              "x-env": "CARELOOP_ALIYUN_SMS_ACCESS_KEY_ID"},
            "access_key_secret": {"type": "string", "minLength": 8,
                                  "x-env": "CARELOOP_ALIYUN_SMS_ACCESS_KEY_SECRET"},
            "sign_name": {"type": "string", "minLength": 2, "maxLength": 20,
                          "x-env": "CARELOOP_ALIYUN_SMS_SIGN_NAME"},
            "region": {"type": "string", "pattern": "^[a-z]+(-[a-z0-9]+)+$",
                       "default": "cn-hangzhou", "x-env": "CARELOOP_ALIYUN_SMS_REGION"},
            "endpoint": {"type": "string", "pattern": "^https?://[^/?#]+/?$",
                         "default": "https://dysmsapi.aliyuncs.com",
                         "x-env": "CARELOOP_ALIYUN_SMS_ENDPOINT"},
            "receipt_token": {"type": "string", "minLength": 16,
                              "x-env": "CARELOOP_ALIYUN_SMS_RECEIPT_TOKEN"}}}
    template_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "additionalProperties": False, "required": ["template_code"],
        "properties": {
            "template_code": {"type": "string", "pattern": "^SMS_[0-9]+$"},
            "params": {"type": "object", "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
                       "additionalProperties": {"type": "string"}}}}
    secret_options = ("access_key_secret", "receipt_token")
    receipts = True
    # OutId is carried, never deduplicated by Alibaba Cloud: a lost outcome goes to a person
    idempotent = False
    retry = RetryPolicy(horizon=timedelta(hours=6), base=timedelta(minutes=1),
                        cap=timedelta(minutes=30))
    timeouts = Timeouts(connect=5, read=10)

    def send(self, message: Outbound, idempotency_key: str) -> SendResult:
        entry = message.provider
        if not entry or not entry.get("template_code"):
            raise ChannelError(f"message {message.id}: its template has no approved "
                               "Alibaba Cloud SMS template (providers.aliyun_sms)",
                               "no_provider_template", retryable=False)
        options = self.options()
        number = e164(message.address, message.id)
        check_endpoint(str(options["endpoint"]), message.id)
        quiet_request_logs()
        try:
            from alibabacloud_dysmsapi20170525 import models
            from alibabacloud_tea_openapi.exceptions import AlibabaCloudException
            from darabonba.runtime import RuntimeOptions
        except ImportError as exc:
            raise self.sdk_missing(message.id, exc) from None

        request = models.SendSmsRequest(
            phone_numbers=number[3:] if number.startswith("+86") else number[1:],
            sign_name=str(options["sign_name"]), template_code=str(entry["template_code"]),
            template_param=json.dumps(dict(entry.get("params") or {}), ensure_ascii=False),
            out_id=idempotency_key)
        runtime = RuntimeOptions(autoretry=False, max_attempts=0,
                                 connect_timeout=int(self.timeouts.connect * 1000),
                                 read_timeout=int(self.timeouts.read * 1000))
        try:
            body = self._client(options).send_sms_with_options(request, runtime).body
        except AlibabaCloudException as exc:
            code = str(exc.code or "")
            if not code and (exc.status_code or 500) >= 500:
                raise ChannelError(f"message {message.id}: Alibaba Cloud SMS answered "
                                   f"{exc.status_code}", "gateway_unreachable") from None
            raise self._refused(message.id, code or f"HTTP{exc.status_code}") from None
        except Exception as exc:  # no answer: the SDK's connection errors are of many types
            raise ChannelError(f"message {message.id}: Alibaba Cloud SMS unreachable "
                               f"({type(exc).__name__})", "gateway_unreachable") from None
        code = str(body.code or "")
        if code != "OK" or not body.biz_id:
            raise self._refused(message.id, code or "no BizId")
        return SendResult("delivered", str(body.biz_id))

    def _refused(self, message_id: int, code: str) -> ChannelError:
        reason, retryable = classify(code, RULES)
        log.warning("outbox message %s: Alibaba Cloud SMS refused it (%s)", message_id, code)
        return ChannelError(f"message {message_id}: Alibaba Cloud SMS refused it: {code}",
                            reason, retryable=retryable)

    def _client(self, options: dict[str, Any]) -> Any:
        from alibabacloud_dysmsapi20170525.client import Client
        from alibabacloud_tea_openapi.utils_models import Config

        endpoint = urlsplit(str(options["endpoint"]))
        return Client(Config(
            access_key_id=str(options["access_key_id"]),
            access_key_secret=str(options["access_key_secret"]),
            region_id=str(options["region"]), endpoint=endpoint.netloc,
            protocol=endpoint.scheme,
            connect_timeout=int(self.timeouts.connect * 1000),
            read_timeout=int(self.timeouts.read * 1000)))

    # --- status reports ------------------------------------------------------------------

    def callback(self, session: Session, hook: str, request: Inbound) -> Answer:
        """``POST /channels/aliyun_sms/receipts?token=…``: a batch of status reports."""
        return receive_reports(session, self, hook, request, REPORTS)


def _check(item: Mapping[str, Any]) -> str | None:
    if not isinstance(item.get("biz_id"), str | int) or item.get("biz_id") == "":
        return "biz_id: missing"
    if not isinstance(item.get("success"), bool):
        return "success: expected true or false"
    return None


# Alibaba Cloud's push: [{phone_number, send_time, report_time, success, err_code, err_msg,
# sms_size, biz_id, out_id}], answered {"code": 0, "msg": "接收成功"}.
REPORTS = ReportFormat(
    ref="biz_id", time="report_time", code="err_code", words="err_msg",
    failed=lambda report: report.get("success") is not True, check=_check,
    ok=lambda: {"code": 0, "msg": "接收成功"}, bad=lambda problem: {"code": 1, "msg": problem})
