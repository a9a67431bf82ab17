// The HTTP API (`copydesk serve`, `/api/v1`), on the platform's fetch. Every error the
// API answers is an RFC 9457 problem document; `Client` throws it as `Problem`.

import { JobArgs } from "./kinds";
import { Enqueued, JobOptions, PipelineStart, jobOptions } from "./queue";
import { activeTrace } from "./trace";
import { validate } from "./validate";

/** An error answer of the API (`application/problem+json`). */
export class Problem extends Error {
  name = "Problem";
  constructor(
    readonly status: number,
    readonly type: string,
    readonly title: string,
    readonly detail: string,
  ) {
    super(`${status} ${title}: ${detail}`);
  }

  /** The last part of `type`: `not-found`, `forbidden`, `invalid`, `conflict`… */
  get kind(): string {
    return this.type.split(":").pop() ?? this.type;
  }
}

export interface ClientOptions {
  /** Sent with every request, so the jobs a call makes carry the caller's trace. */
  traceparent?: string;
  fetch?: typeof fetch;
}

/** A token's view of one copydesk: `new Client("http://127.0.0.1:8080", token)`. */
export class Client {
  private readonly base: string;
  private readonly headers: Record<string, string>;
  private readonly fetch: typeof fetch;

  constructor(baseUrl: string, token: string, options: ClientOptions = {}) {
    this.base = `${baseUrl.replace(/\/+$/, "")}/api/v1`;
    this.headers = { Authorization: `Bearer ${token}`, Accept: "application/json" };
    if (options.traceparent) this.headers.traceparent = options.traceparent;
    this.fetch = options.fetch ?? fetch;
  }

  /** One call: the answer's JSON, or a thrown `Problem`. */
  async request<T = any>(method: string, path: string, body?: unknown, query: Record<string, unknown> = {}): Promise<T> {
    const url = new URL(this.base + path);
    for (const [key, value] of Object.entries(query)) {
      if (value !== undefined && value !== null) url.searchParams.set(key, String(value));
    }
    // Without a traceparent given to the client, the active OpenTelemetry span's.
    const headers: Record<string, string> = { ...(this.headers.traceparent ? {} : activeTrace()), ...this.headers };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await this.fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    if (response.ok) return (text ? JSON.parse(text) : undefined) as T;
    let problem: Record<string, unknown> = {};
    try {
      problem = JSON.parse(text);
    } catch {
      // not JSON: the status and the text say what there is
    }
    throw new Problem(
      response.status,
      String(problem.type ?? "about:blank"),
      String(problem.title ?? response.statusText),
      String(problem.detail ?? text.slice(0, 500)),
    );
  }

  /** Enqueues one job (operator). */
  async enqueue(args: JobArgs, options: JobOptions = {}): Promise<Enqueued> {
    validate(args.kind, args.input);
    return this.request("POST", "/jobs", { kind: args.kind, input: args.input, ...jobOptions(options) });
  }

  /** One job with its runs, steps, artifacts, approvals and publishing attempts. */
  job(id: string): Promise<Record<string, any>> {
    return this.request("GET", `/jobs/${id}`);
  }

  /** Every job the filter matches, newest first, following the pages. */
  jobs(filter: { status?: string; kind?: string; projectId?: string; pageSize?: number } = {}): AsyncGenerator<Record<string, any>> {
    return this.pages("/jobs", {
      status: filter.status,
      kind: filter.kind,
      project_id: filter.projectId,
      limit: filter.pageSize ?? 100,
    });
  }

  /** Starts the pipeline (operator): `{project_id, job}`. */
  startPipeline(start: Omit<PipelineStart, "idempotencyKey">): Promise<{ project_id: string; job: Enqueued }> {
    return this.request("POST", "/pipelines", {
      store_url: start.storeUrl,
      channels: start.channels,
      project_id: start.projectId,
      project_name: start.projectName,
      topic: start.topic,
      instructions: start.instructions,
      schedule: start.schedule?.toISOString(),
    });
  }

  /** Approvals, pending ones by default, following the pages. */
  approvals(filter: { status?: string; projectId?: string } = {}): AsyncGenerator<Record<string, any>> {
    return this.pages("/approvals", { status: filter.status ?? "pending", project_id: filter.projectId, limit: 100 });
  }

  /** Approves or rejects (approver); the audit names the token. */
  async decideApproval(id: string, decision: "approved" | "rejected", notes?: string): Promise<Record<string, any>> {
    const verb = decision === "approved" ? "approve" : decision === "rejected" ? "reject" : undefined;
    if (!verb) throw new Error(`decision ${JSON.stringify(decision)}: approved or rejected`);
    return this.request("POST", `/approvals/${id}/${verb}`, notes === undefined ? {} : { notes });
  }

  private async *pages(path: string, query: Record<string, unknown>): AsyncGenerator<Record<string, any>> {
    let cursor: string | undefined;
    do {
      const page = await this.request<{ items: Record<string, any>[]; next?: string | null }>("GET", path, undefined, {
        ...query,
        cursor,
      });
      yield* page.items;
      cursor = page.next ?? undefined;
    } while (cursor);
  }
}
