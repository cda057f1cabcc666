"""WeChat official account (``wechat_mp``) and WeCom application (``wecom_app``) channel types.

* :mod:`.models` — the shared access-token cache, one-time binding tokens, staff WeCom ids;
* :mod:`.tokens` — access tokens cached in the database, refreshed by one process at a time;
* :mod:`.api` — the providers' HTTP calls and their ``errcode`` mapped to retryable / permanent;
* :mod:`.channels` — the two :class:`~careloop.flows.channel.Channel` types;
* :mod:`.binding` — binding a patient's openid by the QR code on the discharge papers, and the
  official account's event pushes (subscribe / scan / template-send receipts).

The HTTP routes are in ``web/routes_wechat.py``; the administrator's guide in
``docs/integration.md``.
"""
