"""Checking a webhook copydesk sent: a lifecycle event to a subscription
(`copydesk events subscribe`) or a notification to a channel, each signed as the
Standard Webhooks specification says. (The specification's own library,
`pip install standardwebhooks`, checks them the same way.)

    message = verify_webhook(secret, request.headers, request.body)
    if message["type"] == "publication.made":
        print(message["data"]["url"])
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any, Mapping


class WebhookVerificationError(ValueError):
    """A message that is not copydesk's, was changed, or is too old or too new."""


def verify_webhook(
    secret: str,
    headers: Mapping[str, str],
    body: bytes | str,
    *,
    tolerance_secs: int = 300,
    now: float | None = None,
) -> dict[str, Any]:
    """Checks `webhook-signature` over `webhook-id`, `webhook-timestamp` and the raw
    `body` with the subscription's `whsec_` secret, and that the timestamp is within
    `tolerance_secs` of now (a replay of an old message is refused); returns the parsed
    message. Keep the message id (`webhook-id`, the same on every retry) to drop a
    repeat."""
    lower = {k.lower(): v for k, v in headers.items()}
    try:
        msg_id = lower["webhook-id"]
        timestamp = lower["webhook-timestamp"]
        signatures = lower["webhook-signature"]
    except KeyError as missing:
        raise WebhookVerificationError(f"no {missing.args[0]} header") from None
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise WebhookVerificationError(f"webhook-timestamp {timestamp!r} is not a Unix time") from None
    current = time.time() if now is None else now
    if abs(current - sent_at) > tolerance_secs:
        raise WebhookVerificationError(
            f"the message was signed {int(current - sent_at)} s from now, beyond {tolerance_secs} s"
        )
    raw = body.encode() if isinstance(body, str) else body
    key = base64.b64decode(secret.removeprefix("whsec_"))
    expected = base64.b64encode(
        hmac.new(key, f"{msg_id}.{timestamp}.".encode() + raw, hashlib.sha256).digest()
    ).decode()
    for signature in signatures.split():
        version, _, value = signature.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return json.loads(raw)
    raise WebhookVerificationError("no signature matches: another secret, or the body was changed")
