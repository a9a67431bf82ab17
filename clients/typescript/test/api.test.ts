// The HTTP client against the real `copydesk serve`.

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, test } from "node:test";

import { Client, InvalidInput, Problem } from "../src";
import { serve, start, stopAll, store, token, waitFor } from "./support";

let base = "";
before(async () => {
  start(["worker"]);
  base = await serve();
});
after(stopAll);

test("the HTTP client enqueues, reads and throws problems", async () => {
  const api = new Client(base, token("operator"));
  const key = `ts-http-${randomUUID()}`;
  const made = await api.enqueue({ kind: "noop", input: {} }, { idempotencyKey: key });
  assert.equal(made.created, true);
  assert.deepEqual(await api.enqueue({ kind: "noop", input: {} }, { idempotencyKey: key }), { id: made.id, created: false });
  const job = await waitFor("the job is done", async () => {
    const j = await api.job(made.id);
    return j.status === "done" && j;
  });
  assert.equal(job.attempts, 1);
  assert.deepEqual(job.publish_attempts, []);
  const seen: string[] = [];
  for await (const j of api.jobs({ kind: "noop", pageSize: 1 })) seen.push(j.id);
  assert.ok(seen.includes(made.id));
  await assert.rejects(api.job(randomUUID()), (e: unknown) => e instanceof Problem && e.status === 404 && e.kind === "not-found");
  await assert.rejects(api.enqueue({ kind: "noop", input: { sleep_ms: -1 } }), InvalidInput);
  const viewer = new Client(base, token("viewer"));
  await assert.rejects(
    viewer.enqueue({ kind: "noop", input: {} }),
    (e: unknown) => e instanceof Problem && e.status === 403 && /operator/.test(e.detail),
  );
  const stranger = new Client(base, "cdk_nothere_0123456789");
  await assert.rejects(stranger.job(made.id), (e: unknown) => e instanceof Problem && e.status === 401);
});

test("a pipeline through the API", async () => {
  const shop = await store();
  try {
    const api = new Client(base, token("operator"));
    const started = await api.startPipeline({ storeUrl: shop.url, channels: ["x"], projectName: `TS API ${randomUUID().slice(0, 6)}` });
    const approval = await waitFor("the brand voice waits for approval", async () => {
      for await (const a of api.approvals({ projectId: started.project_id })) return a;
      return undefined;
    });
    const approver = new Client(base, token("approver"));
    assert.equal((await approver.decideApproval(approval.id, "approved")).status, "approved");
    await assert.rejects(approver.decideApproval(approval.id, "rejected", "too late"), (e: unknown) => e instanceof Problem && e.status === 409);
  } finally {
    shop.close();
  }
});
