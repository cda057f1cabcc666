"""SMS through Chinese cloud providers: Alibaba Cloud SMS (``aliyun_sms``) and Tencent Cloud SMS
(``tencent_sms``), each a :class:`~careloop.flows.channel.Channel` registered next to the
built-ins (``flows/plugin.py``) and selected per message channel with
``CARELOOP_CHANNEL_SMS=aliyun_sms`` (or ``tencent_sms``).

Both providers send only **approved templates** under an **approved signature** (签名): a
message template names the provider's template and its parameters in its ``providers`` entry
(``template_schema``); the rendered Careloop text is never sent. Delivery receipts (status
reports) come back to ``POST /channels/<type>/receipts?token=…`` (:mod:`careloop.flows.callbacks`,
``web/routes_channels.py``) and are recorded with :func:`careloop.flows.receipts.record_receipt`.

* :mod:`careloop.flows.sms.common` — phone numbers, the provider-code → reason table, the
  egress check, the receipt token;
* :mod:`careloop.flows.sms.aliyun` — the official SDK (``alibabacloud_dysmsapi20170525``,
  ACS3-HMAC-SHA256 signatures);
* :mod:`careloop.flows.sms.tencent` — the official SDK (``tencentcloud-sdk-python-sms``,
  TC3-HMAC-SHA256 signatures).

Neither provider drops a repeated ``OutId`` / ``SessionContext``: both channels are **not**
idempotent, so a send whose outcome was lost goes to a person (``unknown``), never out twice.
"""

from __future__ import annotations

from careloop.flows.channel import Channel


def sms_channels() -> dict[str, Channel]:
    """The SMS channel types by name (imported lazily: the SDKs load only when registered)."""
    from careloop.flows.sms.aliyun import AliyunSms
    from careloop.flows.sms.tencent import TencentSms

    return {AliyunSms.name: AliyunSms(), TencentSms.name: TencentSms()}
