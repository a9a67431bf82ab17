"""Enqueueing inside the caller's transaction, against a real database and a real
`copydesk worker`."""

from __future__ import annotations

import uuid

import psycopg
import pytest
import sqlalchemy
from support import one, wait_for

import copydesk
from copydesk import Noop, enqueue


def job_by_key(database_url: str, key: str) -> tuple | None:
    return one(database_url, "SELECT id, status, attempts FROM jobs WHERE idempotency_key = %s", key)


def done(database_url: str, key: str) -> tuple:
    return wait_for(
        f"job {key} done",
        lambda: (row := job_by_key(database_url, key)) and row[1] == "done" and row,
    )


def test_a_job_enqueued_in_a_rolled_back_transaction_never_runs_and_a_committed_one_runs_once(
    conn: psycopg.Connection, database_url: str, worker
) -> None:
    gone, kept = f"rolled-back-{uuid.uuid4()}", f"committed-{uuid.uuid4()}"
    with conn.transaction(force_rollback=True):
        rolled_back = enqueue(conn, Noop(), idempotency_key=gone)
        # The caller's own transaction sees its job; no one else does.
        assert one(database_url, "SELECT 1 FROM jobs WHERE id = %s", rolled_back.id) is None
    with conn.transaction():
        committed = enqueue(conn, Noop(sleep_ms=10), idempotency_key=kept)
    assert committed.created
    job_id, status, attempts = done(database_url, kept)
    assert (job_id, status, attempts) == (committed.id, "done", 1)
    # The worker has run a job committed after the rolled-back one, which never existed.
    assert job_by_key(database_url, gone) is None
    assert one(database_url, "SELECT count(*) FROM jobs WHERE id = %s", rolled_back.id) == (0,)


def test_sqlalchemy_connections_enqueue_in_their_transaction_too(database_url: str, worker) -> None:
    engine = sqlalchemy.create_engine(database_url.replace("postgres://", "postgresql+psycopg://", 1).replace("postgresql://", "postgresql+psycopg://", 1))
    gone, kept = f"sa-rolled-back-{uuid.uuid4()}", f"sa-committed-{uuid.uuid4()}"
    with engine.connect() as c:
        with c.begin() as tx:
            enqueue(c, Noop(), idempotency_key=gone)
            # An order row of the service's own, in the same transaction.
            c.execute(sqlalchemy.text("SELECT 1"))
            tx.rollback()
        with c.begin():
            made = enqueue(c, Noop(), idempotency_key=kept)
    assert done(database_url, kept)[0] == made.id
    assert job_by_key(database_url, gone) is None
    engine.dispose()


def test_an_idempotency_key_used_again_gives_the_first_job(conn: psycopg.Connection, worker) -> None:
    key = f"order-{uuid.uuid4()}"
    with conn.transaction():
        first = enqueue(conn, Noop(), idempotency_key=key, priority=5)
    with conn.transaction():
        again = enqueue(conn, Noop(sleep_ms=1), idempotency_key=key)
    assert first.created and not again.created
    assert again.id == first.id


def test_an_input_its_schema_refuses_is_named_and_nothing_is_written(conn: psycopg.Connection, database_url: str) -> None:
    before = one(database_url, "SELECT count(*) FROM jobs")
    with pytest.raises(copydesk.InvalidInput) as refused:
        with conn.transaction():
            enqueue(conn, copydesk.DraftGeneration(channel="tiktok", brand_voice_artifact_id="not-a-uuid"))
    message = str(refused.value)
    assert "channel" in message and "tiktok" in message, message
    assert "brand_voice_artifact_id" in message, message
    with pytest.raises(copydesk.InvalidInput, match="sleep_ms"):
        enqueue(conn, Noop(sleep_ms=-5))
    assert one(database_url, "SELECT count(*) FROM jobs") == before


def test_a_tenants_own_role_enqueues_that_tenants_jobs_only(copydesk_bin: str, database_url: str, worker) -> None:
    from conftest import run_copydesk

    slug = "py" + uuid.uuid4().hex[:8]
    run_copydesk(copydesk_bin, database_url, "tenants", "create", slug, "--name", "Py Shop",
                 "--db-role", f"{slug}_app", stdin="py-shop-password\n")
    (tenant_id,) = one(database_url, "SELECT id FROM tenants WHERE slug = %s", slug)
    url = psycopg.conninfo.make_conninfo(database_url, user=f"{slug}_app", password="py-shop-password")
    key = f"tenant-{uuid.uuid4()}"
    with psycopg.connect(url) as tenant_conn, tenant_conn.transaction():
        made = enqueue(tenant_conn, Noop(), idempotency_key=key)
        # The tenant's own session sees only its own jobs.
        seen = tenant_conn.execute("SELECT count(*) FROM jobs WHERE tenant_id <> %s", (tenant_id,)).fetchone()
        assert seen == (0,)
    assert done(database_url, key)[0] == made.id
    assert one(database_url, "SELECT tenant_id FROM jobs WHERE id = %s", made.id) == (tenant_id,)


def test_a_pipeline_started_and_approved_from_python_goes_on_to_its_drafts(
    conn: psycopg.Connection, database_url: str, store: str, worker
) -> None:
    with conn.transaction():
        started = copydesk.start_pipeline(
            conn, store_url=store, channels=["blog"], project_name=f"Linen {uuid.uuid4().hex[:6]}",
            topic="Why washed linen lasts",
        )
    approval = wait_for(
        "the brand voice waits for approval",
        lambda: one(
            database_url,
            "SELECT a.id FROM approvals a JOIN jobs j ON j.id = a.job_id "
            "WHERE j.id = %s AND a.status = 'pending'",
            started.job.id,
        ),
    )[0]
    with conn.transaction():
        decision = copydesk.decide_approval(conn, approval, "approved", by="py-service")
    assert (decision.approval_id, decision.job_id, decision.status) == (approval, started.job.id, "approved")
    drafts = wait_for(
        "a blog draft is generated",
        lambda: one(
            database_url,
            "SELECT id, input->>'channel' FROM jobs WHERE project_id = %s AND kind = 'draft_generation'",
            started.project_id,
        ),
    )
    assert drafts[1] == "blog"
    # A decision is made once.
    with pytest.raises(copydesk.AlreadyDecided, match="approved"):
        with conn.transaction():
            copydesk.decide_approval(conn, approval, "rejected", by="py-service", notes="too late")
    with pytest.raises(copydesk.ApprovalNotFound):
        with conn.transaction():
            copydesk.decide_approval(conn, uuid.uuid4(), "approved", by="py-service")
    with pytest.raises(ValueError, match="not both"):
        copydesk.start_pipeline(conn, store_url=store, channels=["x"])


def test_a_job_carries_the_trace_of_the_span_that_enqueued_it(
    conn: psycopg.Connection, database_url: str, worker
) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("shop-service")
    keys = {name: f"{name}-{uuid.uuid4()}" for name in ("traced", "given", "untraced")}
    with conn.transaction():
        with tracer.start_as_current_span("checkout") as span:
            ctx = span.get_span_context()
            enqueue(conn, Noop(), idempotency_key=keys["traced"])
            given = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
            enqueue(conn, Noop(), idempotency_key=keys["given"], traceparent=given, tracestate="shop=1")
        enqueue(conn, Noop(), idempotency_key=keys["untraced"])
    trace = lambda key: one(
        database_url, "SELECT traceparent, tracestate FROM jobs WHERE idempotency_key = %s", key
    )
    assert trace(keys["traced"]) == (f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}", None)
    assert trace(keys["given"]) == (given, "shop=1")
    assert trace(keys["untraced"]) == (None, None)
    # The worker runs them as any other; the trace stays as it was written.
    done(database_url, keys["traced"])
    assert trace(keys["traced"])[0].startswith(f"00-{ctx.trace_id:032x}-")
