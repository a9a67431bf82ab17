"""The HTTP client against the real `copydesk serve`."""

from __future__ import annotations

import uuid

import pytest
from conftest import run_copydesk
from support import wait_for

import copydesk
from copydesk import Client, Noop


def token(copydesk_bin: str, database_url: str, role: str) -> str:
    out = run_copydesk(copydesk_bin, database_url, "tokens", "create", "--role", role,
                       "--name", f"py-{role}-{uuid.uuid4().hex[:6]}", "--expires", "1h")
    return out.strip().splitlines()[-1]


def test_the_http_client_enqueues_reads_and_raises_problems(
    server: str, copydesk_bin: str, database_url: str, worker
) -> None:
    with Client(server, token(copydesk_bin, database_url, "operator")) as api:
        key = f"http-{uuid.uuid4()}"
        made = api.enqueue(Noop(), idempotency_key=key)
        assert made["created"] is True
        assert api.enqueue(Noop(), idempotency_key=key) == {"id": made["id"], "created": False}
        job = wait_for("the job is done", lambda: (j := api.job(made["id"]))["status"] == "done" and j)
        assert job["attempts"] == 1 and job["publish_attempts"] == []
        assert made["id"] in {j["id"] for j in api.jobs(kind="noop", page_size=1)}
        with pytest.raises(copydesk.Problem) as missing:
            api.job(uuid.uuid4())
        assert (missing.value.status, missing.value.kind) == (404, "not-found")
        with pytest.raises(copydesk.InvalidInput):
            api.enqueue(Noop(sleep_ms=-1))
    with Client(server, token(copydesk_bin, database_url, "viewer")) as viewer:
        with pytest.raises(copydesk.Problem) as refused:
            viewer.enqueue(Noop())
        assert refused.value.status == 403 and "operator" in refused.value.detail
    with Client(server, "cdk_nothere_0123456789") as stranger:
        with pytest.raises(copydesk.Problem) as unknown:
            list(stranger.jobs())
        assert unknown.value.status == 401


def test_a_pipeline_through_the_api(server: str, store: str, copydesk_bin: str, database_url: str, worker) -> None:
    with Client(server, token(copydesk_bin, database_url, "operator")) as api:
        started = api.start_pipeline(store_url=store, channels=["x"], project_name=f"API {uuid.uuid4().hex[:6]}")
        approval = wait_for(
            "the brand voice waits for approval",
            lambda: next(iter(api.approvals(project_id=started["project_id"])), None),
        )
    with Client(server, token(copydesk_bin, database_url, "approver")) as approver:
        decided = approver.decide_approval(approval["id"], "approved")
        assert decided["status"] == "approved"
        with pytest.raises(copydesk.Problem) as twice:
            approver.decide_approval(approval["id"], "rejected", notes="too late")
        assert twice.value.status == 409
