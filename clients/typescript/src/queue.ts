// Writing copydesk's rows inside the caller's own transaction.
//
// Each function takes the caller's node-postgres client (a `Client` or a pool's
// `PoolClient` inside BEGIN … COMMIT) or a Drizzle transaction (`fromDrizzle(tx)`), and
// runs its statements there, so the job, the project or the decision commits or rolls
// back with the caller's own writes: a job enqueued in a transaction that rolls back
// never existed, and no worker runs it. Nothing here commits. Which tenant a row
// belongs to is the database's to decide, from the session's role.

import { BrandVoiceAnalysis, JobArgs } from "./kinds";
import { TraceContext, activeTrace } from "./trace";
import { validate } from "./validate";

/** What runs a statement: node-postgres's `Client`/`PoolClient`, or `fromDrizzle(tx)`. */
export interface Queryable {
  query(text: string, values?: unknown[]): Promise<{ rows: any[] }>;
}

/** A Drizzle transaction (or database) over node-postgres, as a `Queryable`. */
export function fromDrizzle(tx: { execute(query: unknown): Promise<unknown> }): Queryable {
  // drizzle-orm is the caller's: loaded only when they use it.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { sql } = require("drizzle-orm") as typeof import("drizzle-orm");
  return {
    async query(text, values = []) {
      const parts = text.split(/\$(\d+)/);
      const chunks = parts.map((part, i) =>
        i % 2 === 0 ? sql.raw(part) : sql`${values[Number(part) - 1]}`,
      );
      const result = (await tx.execute(sql.join(chunks))) as { rows: any[] };
      return { rows: result.rows };
    },
  };
}

/** The idempotency key names a job this session cannot see (another tenant's). */
export class IdempotencyKeyTaken extends Error {
  name = "IdempotencyKeyTaken";
}

/** No approval with this id (or it is another tenant's). */
export class ApprovalNotFound extends Error {
  name = "ApprovalNotFound";
}

/** The approval was decided before: a decision cannot be changed. */
export class AlreadyDecided extends Error {
  name = "AlreadyDecided";
  constructor(
    readonly approvalId: string,
    readonly status: string,
  ) {
    super(`approval ${approvalId} is ${status}, not pending: a decision cannot be changed`);
  }
}

/** A job's options; unset ones take the table's defaults (priority 0, now, 5 attempts). */
export interface JobOptions {
  projectId?: string;
  priority?: number;
  runAt?: Date;
  maxAttempts?: number;
  /** A second enqueue with the same key gives the first job (`created: false`). */
  idempotencyKey?: string;
  /**
   * The W3C trace the job belongs to; unset, the active OpenTelemetry span's (when
   * `@opentelemetry/api` is installed). Not sent by the HTTP client's `enqueue`, which
   * sends the `traceparent` header instead.
   */
  traceparent?: string;
  tracestate?: string;
}

/** A job enqueued: its id, and false when the idempotency key named an existing job. */
export interface Enqueued {
  id: string;
  created: boolean;
}

/** The options that were set, as the row (and the API's body) names them. */
export function jobOptions(options: JobOptions): Record<string, string | number> {
  const given: Record<string, string | number | undefined> = {
    project_id: options.projectId,
    priority: options.priority,
    run_at: options.runAt?.toISOString(),
    max_attempts: options.maxAttempts,
    idempotency_key: options.idempotencyKey,
  };
  return Object.fromEntries(
    Object.entries(given).filter((entry): entry is [string, string | number] => entry[1] !== undefined),
  );
}

/**
 * Enqueues one job in the caller's transaction: `enqueue(client, {kind: "noop", input:
 * {}})`. The input is checked against its kind's schema first (`InvalidInput`, nothing
 * written).
 */
export async function enqueue(db: Queryable, args: JobArgs, options: JobOptions = {}): Promise<Enqueued> {
  validate(args.kind, args.input);
  const trace: TraceContext = options.traceparent
    ? { traceparent: options.traceparent, tracestate: options.tracestate }
    : activeTrace();
  const columns: Record<string, unknown> = {
    kind: args.kind,
    input: JSON.stringify(args.input),
    ...jobOptions(options),
    ...Object.fromEntries(Object.entries(trace).filter((entry) => entry[1] !== undefined)),
  };
  const casts: Record<string, string> = { input: "jsonb", project_id: "uuid", run_at: "timestamptz" };
  const names = Object.keys(columns);
  const values = names.map((name, i) => (casts[name] ? `CAST($${i + 1} AS ${casts[name]})` : `$${i + 1}`));
  const inserted = await db.query(
    `INSERT INTO jobs (${names.join(", ")}) VALUES (${values.join(", ")}) ` +
      "ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING RETURNING id",
    Object.values(columns),
  );
  if (inserted.rows.length > 0) {
    return { id: String(inserted.rows[0].id), created: true };
  }
  const existing = await db.query("SELECT id FROM jobs WHERE idempotency_key = $1", [options.idempotencyKey]);
  if (existing.rows.length === 0) {
    throw new IdempotencyKeyTaken(
      `idempotency key ${JSON.stringify(options.idempotencyKey)} names a job this session cannot see`,
    );
  }
  return { id: String(existing.rows[0].id), created: false };
}

/** A pipeline to start, as `copydesk pipeline start` takes it. */
export interface PipelineStart {
  storeUrl: string;
  channels: Array<"blog" | "linkedin" | "x" | "facebook">;
  /** An existing project, or… */
  projectId?: string;
  /** …a new one by this name. */
  projectName?: string;
  topic?: string;
  instructions?: string;
  schedule?: Date;
  idempotencyKey?: string;
}

/** A pipeline started: its project and its brand voice analysis job. */
export interface Started {
  projectId: string;
  job: Enqueued;
}

/**
 * Starts the pipeline as `copydesk pipeline start` does, in the caller's transaction:
 * creates the project when `projectName` is given, and enqueues its brand voice
 * analysis, after which drafts for each channel follow.
 */
export async function startPipeline(db: Queryable, start: PipelineStart): Promise<Started> {
  if ((start.projectId === undefined) === (start.projectName === undefined)) {
    throw new Error("give projectId (an existing project) or projectName (a new one), not both");
  }
  const input: BrandVoiceAnalysis = {
    store_url: start.storeUrl,
    pipeline: {
      channels: start.channels,
      ...(start.topic !== undefined && { topic: start.topic }),
      ...(start.instructions !== undefined && { instructions: start.instructions }),
      ...(start.schedule !== undefined && { schedule: start.schedule.toISOString() }),
    },
  };
  // Checked before the project is made, so a bad input leaves nothing behind.
  validate("brand_voice_analysis", input);
  let projectId = start.projectId;
  if (start.projectName !== undefined) {
    const made = await db.query("INSERT INTO projects (name, store_url) VALUES ($1, $2) RETURNING id", [
      start.projectName,
      start.storeUrl,
    ]);
    projectId = String(made.rows[0].id);
  }
  const job = await enqueue(
    db,
    { kind: "brand_voice_analysis", input },
    { projectId, idempotencyKey: start.idempotencyKey },
  );
  return { projectId: projectId!, job };
}

/** An approval decided: a worker applies it once the transaction commits. */
export interface Decision {
  approvalId: string;
  jobId: string;
  status: "approved" | "rejected";
}

/**
 * Approves or rejects a pending approval in the caller's transaction, as `copydesk
 * approvals approve|reject` does; `by` is who decided (the audit names them).
 */
export async function decideApproval(
  db: Queryable,
  approvalId: string,
  decision: "approved" | "rejected",
  by: string,
  notes?: string,
): Promise<Decision> {
  if (decision !== "approved" && decision !== "rejected") {
    throw new Error(`decision ${JSON.stringify(decision)}: approved or rejected`);
  }
  if (!by.trim()) {
    throw new Error("by: who decided (the audit names them)");
  }
  const decided = await db.query(
    "UPDATE approvals SET status = $2, decided_by = $3, notes = coalesce($4, notes) " +
      "WHERE id = CAST($1 AS uuid) AND status = 'pending' RETURNING id, job_id, status",
    [approvalId, decision, by, notes ?? null],
  );
  if (decided.rows.length > 0) {
    const row = decided.rows[0];
    return { approvalId: String(row.id), jobId: String(row.job_id), status: row.status };
  }
  const current = await db.query("SELECT status FROM approvals WHERE id = CAST($1 AS uuid)", [approvalId]);
  if (current.rows.length === 0) {
    throw new ApprovalNotFound(`no approval ${approvalId}`);
  }
  throw new AlreadyDecided(approvalId, current.rows[0].status);
}
