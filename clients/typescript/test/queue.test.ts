// Enqueueing inside the caller's transaction (node-postgres and Drizzle), against a
// real database and a real `copydesk worker`.

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, test } from "node:test";
import { context, propagation, trace } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { drizzle } from "drizzle-orm/node-postgres";
import { Pool } from "pg";

import { AlreadyDecided, ApprovalNotFound, InvalidInput, decideApproval, enqueue, fromDrizzle, startPipeline } from "../src";
import { connect, copydesk, databaseUrl, one, start, stopAll, store, waitFor } from "./support";

before(() => {
  start(["worker"]);
});
after(stopAll);

async function jobByKey(key: string) {
  return one("SELECT id, status, attempts FROM jobs WHERE idempotency_key = $1", [key]);
}

async function done(key: string) {
  return waitFor(`job ${key} done`, async () => {
    const row = await jobByKey(key);
    return row?.status === "done" && row;
  });
}

test("a job enqueued in a rolled-back transaction never runs; a committed one runs once", async () => {
  const db = await connect();
  const gone = `ts-rolled-back-${randomUUID()}`;
  const kept = `ts-committed-${randomUUID()}`;
  try {
    await db.query("BEGIN");
    const rolledBack = await enqueue(db, { kind: "noop", input: {} }, { idempotencyKey: gone });
    assert.equal(await one("SELECT 1 FROM jobs WHERE id = $1", [rolledBack.id]), undefined, "seen outside its transaction");
    await db.query("ROLLBACK");
    await db.query("BEGIN");
    const committed = await enqueue(db, { kind: "noop", input: { sleep_ms: 10 } }, { idempotencyKey: kept });
    await db.query("COMMIT");
    assert.equal(committed.created, true);
    const row = await done(kept);
    assert.deepEqual([row.id, row.status, row.attempts], [committed.id, "done", 1]);
    // The worker has run a job committed after the rolled-back one, which never existed.
    assert.equal(await jobByKey(gone), undefined);
  } finally {
    await db.end();
  }
});

test("a Drizzle transaction enqueues in its transaction too", async () => {
  const pool = new Pool({ connectionString: databaseUrl });
  const orm = drizzle(pool);
  const gone = `drizzle-rolled-back-${randomUUID()}`;
  const kept = `drizzle-committed-${randomUUID()}`;
  try {
    await assert.rejects(
      orm.transaction(async (tx) => {
        await enqueue(fromDrizzle(tx), { kind: "noop", input: {} }, { idempotencyKey: gone });
        tx.rollback();
      }),
    );
    const made = await orm.transaction((tx) => enqueue(fromDrizzle(tx), { kind: "noop", input: {} }, { idempotencyKey: kept }));
    assert.equal((await done(kept)).id, made.id);
    assert.equal(await jobByKey(gone), undefined);
  } finally {
    await pool.end();
  }
});

test("an idempotency key used again gives the first job", async () => {
  const db = await connect();
  const key = `ts-order-${randomUUID()}`;
  try {
    const first = await enqueue(db, { kind: "noop", input: {} }, { idempotencyKey: key, priority: 5 });
    const again = await enqueue(db, { kind: "noop", input: { sleep_ms: 1 } }, { idempotencyKey: key });
    assert.equal(first.created, true);
    assert.equal(again.created, false);
    assert.equal(again.id, first.id);
  } finally {
    await db.end();
  }
});

test("an input its schema refuses is named and nothing is written", async () => {
  const db = await connect();
  try {
    const before = await one("SELECT count(*)::int AS n FROM jobs");
    await assert.rejects(
      enqueue(db, {
        kind: "draft_generation",
        // A caller without the types (plain JavaScript) can send anything.
        input: { channel: "tiktok", brand_voice_artifact_id: "not-a-uuid" } as never,
      }),
      (e: unknown) => {
        assert.ok(e instanceof InvalidInput);
        assert.match(e.message, /channel/);
        assert.match(e.message, /tiktok|blog/);
        assert.match(e.message, /brand_voice_artifact_id/);
        return true;
      },
    );
    await assert.rejects(enqueue(db, { kind: "noop", input: { sleep_ms: -5 } }), /sleep_ms/);
    assert.deepEqual(await one("SELECT count(*)::int AS n FROM jobs"), before);
  } finally {
    await db.end();
  }
});

test("a tenant's own role enqueues that tenant's jobs only", async () => {
  const slug = `ts${randomUUID().slice(0, 8)}`;
  copydesk(["tenants", "create", slug, "--name", "TS Shop", "--db-role", `${slug}_app`], "ts-shop-password\n");
  const { id: tenantId } = (await one("SELECT id FROM tenants WHERE slug = $1", [slug]))!;
  const url = new URL(databaseUrl);
  url.username = `${slug}_app`;
  url.password = "ts-shop-password";
  const db = await connect(url.toString());
  const key = `ts-tenant-${randomUUID()}`;
  try {
    const made = await enqueue(db, { kind: "noop", input: {} }, { idempotencyKey: key });
    const others = await db.query("SELECT count(*)::int AS n FROM jobs WHERE tenant_id <> $1", [tenantId]);
    assert.equal(others.rows[0].n, 0);
    assert.equal((await done(key)).id, made.id);
    assert.equal((await one("SELECT tenant_id FROM jobs WHERE id = $1", [made.id]))!.tenant_id, tenantId);
  } finally {
    await db.end();
  }
});

test("a pipeline started and approved from TypeScript goes on to its drafts", async () => {
  const shop = await store();
  const db = await connect();
  try {
    await db.query("BEGIN");
    const started = await startPipeline(db, {
      storeUrl: shop.url,
      channels: ["linkedin"],
      projectName: `TS Linen ${randomUUID().slice(0, 6)}`,
      topic: "Why washed linen lasts",
    });
    await db.query("COMMIT");
    const approval = await waitFor("the brand voice waits for approval", () =>
      one("SELECT a.id FROM approvals a WHERE a.job_id = $1 AND a.status = 'pending'", [started.job.id]),
    );
    await db.query("BEGIN");
    const decision = await decideApproval(db, approval.id, "approved", "ts-service");
    await db.query("COMMIT");
    assert.deepEqual(decision, { approvalId: approval.id, jobId: started.job.id, status: "approved" });
    const draft = await waitFor("a linkedin draft is generated", () =>
      one("SELECT input->>'channel' AS channel FROM jobs WHERE project_id = $1 AND kind = 'draft_generation'", [
        started.projectId,
      ]),
    );
    assert.equal(draft.channel, "linkedin");
    await assert.rejects(decideApproval(db, approval.id, "rejected", "ts-service", "too late"), AlreadyDecided);
    await assert.rejects(decideApproval(db, randomUUID(), "approved", "ts-service"), ApprovalNotFound);
    await assert.rejects(startPipeline(db, { storeUrl: shop.url, channels: ["x"] }), /not both/);
  } finally {
    await db.end();
    shop.close();
  }
});

test("a job carries the trace of the span that enqueued it", async () => {
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  const db = await connect();
  const keys = { traced: `ts-traced-${randomUUID()}`, given: `ts-given-${randomUUID()}`, none: `ts-none-${randomUUID()}` };
  const span = { traceId: "4bf92f3577b34da6a3ce929d0e0e4736", spanId: "00f067aa0ba902b7", traceFlags: 1 };
  const given = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
  try {
    await context.with(trace.setSpanContext(context.active(), span), async () => {
      await enqueue(db, { kind: "noop", input: {} }, { idempotencyKey: keys.traced });
      await enqueue(db, { kind: "noop", input: {} }, { idempotencyKey: keys.given, traceparent: given, tracestate: "shop=1" });
    });
    await enqueue(db, { kind: "noop", input: {} }, { idempotencyKey: keys.none });
  } finally {
    await db.end();
  }
  const traceOf = (key: string) => one("SELECT traceparent, tracestate FROM jobs WHERE idempotency_key = $1", [key]);
  assert.deepEqual(await traceOf(keys.traced), {
    traceparent: `00-${span.traceId}-${span.spanId}-01`,
    tracestate: null,
  });
  assert.deepEqual(await traceOf(keys.given), { traceparent: given, tracestate: "shop=1" });
  assert.deepEqual(await traceOf(keys.none), { traceparent: null, tracestate: null });
  await done(keys.traced);
});
