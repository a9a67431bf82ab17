// A TypeScript service subscribed to its lifecycle events, against the real worker.

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, test } from "node:test";

import { WebhookVerificationError, decideApproval, startPipeline, verifyWebhook } from "../src";
import { connect, copydesk, receiver, start, stopAll, store, waitFor } from "./support";

before(() => {
  start(["worker"]);
});
after(stopAll);

test("a service hears its pipeline and checks each message", async () => {
  const shop = await store();
  const hooks = await receiver();
  const db = await connect();
  try {
    const made = await db.query("INSERT INTO projects (name, store_url) VALUES ($1, $2) RETURNING id", [
      `TS Events ${randomUUID().slice(0, 6)}`,
      shop.url,
    ]);
    const projectId = String(made.rows[0].id);
    const out = copydesk([
      "events", "subscribe", hooks.url, "--project", projectId, "--event", "approval.waiting,approval.decided",
    ]);
    const secret = out.trim().split("\n").pop()!;
    assert.match(secret, /^whsec_/);
    const started = await startPipeline(db, { storeUrl: shop.url, channels: ["facebook"], projectId });
    await waitFor("approval.waiting is delivered", async () => hooks.types().includes("approval.waiting"));
    const first = hooks.requests[0];
    const waiting = verifyWebhook(secret, first.headers, first.body);
    assert.equal(waiting.type, "approval.waiting");
    assert.equal(waiting.data.job_id, started.job.id);
    assert.equal(waiting.data.artifact_kind, "brand_voice");
    assert.match(String(first.headers["webhook-id"]), /^evt_/);
    await decideApproval(db, waiting.data.approval_id, "approved", "ts-service");
    await waitFor("approval.decided is delivered", async () => hooks.types().includes("approval.decided"));
    const second = hooks.requests[hooks.types().indexOf("approval.decided")];
    const decided = verifyWebhook(secret, second.headers, second.body);
    assert.deepEqual([decided.data.status, decided.data.decided_by], ["approved", "ts-service"]);
    assert.deepEqual(new Set(hooks.types()), new Set(["approval.waiting", "approval.decided"]));

    // A changed body, another secret, or an old message is refused.
    const changed = Buffer.from(second.body.toString().replace("approved", "rejected"));
    assert.throws(() => verifyWebhook(secret, second.headers, changed), /no signature matches/);
    assert.throws(() => verifyWebhook(`whsec_${"A".repeat(43)}=`, second.headers, second.body), WebhookVerificationError);
    const sentAt = Number(second.headers["webhook-timestamp"]);
    assert.throws(() => verifyWebhook(secret, second.headers, second.body, { now: sentAt + 3600 }), /beyond/);
  } finally {
    await db.end();
    hooks.close();
    shop.close();
  }
});
