"""Providers calling back: ``GET|POST /channels/<channel type>/<hook>`` (SMS status reports at
``/channels/aliyun_sms/receipts`` and ``/channels/tencent_sms/receipts``; any channel type that
implements :class:`careloop.flows.callbacks.CallbackChannel` gets its endpoint here, a plugin's
included, with no route of its own).

No session, no CSRF token, no API key: the channel verifies the provider (its signature or the
shared token it requires) and answers in the provider's format. A channel type without a
callback, or an unknown one, is ``404``. Nothing of the request is logged here.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from fastapi.responses import Response

from careloop.engine.db import transaction
from careloop.engine.registry import loaded_registry
from careloop.flows.callbacks import MAX_BODY, CallbackChannel, Inbound, refused
from careloop.web.deps import request_body

router = APIRouter(prefix="/channels", include_in_schema=False)
NAME = r"^[a-z][a-z0-9_]{0,63}$"


@router.api_route("/{channel_type}/{hook}", methods=["GET", "POST"])
def channel_callback(request: Request, channel_type: str = Path(pattern=NAME),
                     hook: str = Path(pattern=NAME),
                     raw: bytes = Depends(request_body)) -> Response:
    channel = loaded_registry().catalogue("channel_adapter").get(channel_type)
    if channel is None or not isinstance(channel, CallbackChannel):
        raise HTTPException(status_code=404)
    if len(raw) > MAX_BODY:
        answer = refused(413)
    else:
        inbound = Inbound(request.method, dict(request.query_params),
                          {k.lower(): v for k, v in request.headers.items()}, raw)
        with transaction() as session:
            answer = channel.callback(session, hook, inbound)
    return Response(answer.body, status_code=answer.status, media_type=answer.media_type,
                    headers=dict(answer.headers))
