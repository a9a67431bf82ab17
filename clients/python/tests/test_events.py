"""A Python service subscribed to its lifecycle events, against the real worker."""

from __future__ import annotations

import json
import uuid

import psycopg
import pytest
from conftest import run_copydesk
from support import wait_for

import copydesk


def test_a_service_hears_its_pipeline_and_checks_each_message(
    conn: psycopg.Connection, database_url: str, copydesk_bin: str, store: str, worker, receiver
) -> None:
    with conn.transaction():
        (project_id,) = conn.execute(
            "INSERT INTO projects (name, store_url) VALUES (%s, %s) RETURNING id",
            (f"Events {uuid.uuid4().hex[:6]}", store),
        ).fetchone()
    out = run_copydesk(
        copydesk_bin, database_url, "events", "subscribe", receiver.url,
        "--project", str(project_id), "--event", "approval.waiting,approval.decided",
    )
    secret = out.strip().splitlines()[-1]
    assert secret.startswith("whsec_"), out
    with conn.transaction():
        started = copydesk.start_pipeline(conn, store_url=store, channels=["blog"], project_id=project_id)
    wait_for("approval.waiting is delivered", lambda: "approval.waiting" in receiver.types())
    headers, body = receiver.requests[0]
    waiting = copydesk.verify_webhook(secret, headers, body)
    assert waiting["type"] == "approval.waiting"
    assert waiting["data"]["job_id"] == str(started.job.id)
    assert waiting["data"]["artifact_kind"] == "brand_voice"
    assert headers["webhook-id"].startswith("evt_")
    with conn.transaction():
        copydesk.decide_approval(conn, waiting["data"]["approval_id"], "approved", by="py-service")
    wait_for("approval.decided is delivered", lambda: "approval.decided" in receiver.types())
    headers, body = receiver.requests[receiver.types().index("approval.decided")]
    decided = copydesk.verify_webhook(secret, headers, body)
    assert (decided["data"]["status"], decided["data"]["decided_by"]) == ("approved", "py-service")
    # Only the types it asked for, and only this project's.
    assert set(receiver.types()) == {"approval.waiting", "approval.decided"}

    # A changed body, another secret, or an old message is refused.
    changed = body.replace(b"approved", b"rejected")
    with pytest.raises(copydesk.WebhookVerificationError, match="no signature matches"):
        copydesk.verify_webhook(secret, headers, changed)
    with pytest.raises(copydesk.WebhookVerificationError):
        copydesk.verify_webhook("whsec_" + "A" * 43 + "=", headers, body)
    with pytest.raises(copydesk.WebhookVerificationError, match="beyond"):
        copydesk.verify_webhook(secret, headers, body, now=int(headers["webhook-timestamp"]) + 3600)
    listed = json.loads(run_copydesk(copydesk_bin, database_url, "events", "subscriptions", "--json"))
    mine = [s for s in listed if s["project_id"] == str(project_id)]
    assert len(mine) == 1 and mine[0]["last_status"] == "delivered", mine
