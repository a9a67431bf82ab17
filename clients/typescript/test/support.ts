// What the client's tests run against: a real Postgres migrated by copydesk
// (`COPYDESK_TEST_DATABASE_URL`, a fresh database the harness made) and the real
// `copydesk` binary (`COPYDESK_BIN`). `cargo test --test clients` sets both.

import { ChildProcess, execFileSync, spawn } from "node:child_process";
import { createServer } from "node:http";
import { AddressInfo } from "node:net";
import { createInterface } from "node:readline";
import { Client as Pg } from "pg";

function env(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run these tests through \`cargo test --test clients\``);
  return value;
}

export const databaseUrl = env("COPYDESK_TEST_DATABASE_URL");
/**
 * The Fernet keys the CLI seals subscriptions with and every worker opens them with:
 * the harness's, the same for each test file (each runs in a process of its own).
 */
const fernetKeys = env("COPYDESK_FERNET_KEYS");
const bin = env("COPYDESK_BIN");

/** A connection of the test's own (the database's owner). */
export async function connect(url = databaseUrl): Promise<Pg> {
  const client = new Pg({ connectionString: url });
  await client.connect();
  return client;
}

/** One row, read by the owner in a transaction of its own. */
export async function one(sql: string, values: unknown[] = []): Promise<Record<string, any> | undefined> {
  const client = await connect();
  try {
    return (await client.query(sql, values)).rows[0];
  } finally {
    await client.end();
  }
}

/** Runs the CLI to the end: its stdout. */
export function copydesk(args: string[], input?: string): string {
  return execFileSync(bin, args, {
    env: {
      ...process.env,
      DATABASE_URL: databaseUrl,
      RUST_LOG: "warn",
      COPYDESK_FERNET_KEYS: fernetKeys,
      COPYDESK__FETCH__ALLOW_LOOPBACK: "true",
    },
    input,
    encoding: "utf8",
  });
}

const started: ChildProcess[] = [];

/** Starts `copydesk <args>` as the tests' worker or server, stopped by `stopAll`. */
export function start(args: string[]): ChildProcess {
  const child = spawn(bin, args, {
    env: {
      ...process.env,
      DATABASE_URL: databaseUrl,
      RUST_LOG: "warn",
      COPYDESK__WORKER__POLL_INTERVAL_MS: "200",
      COPYDESK__FETCH__ALLOW_LOOPBACK: "true",
      COPYDESK__CATALOG__ENABLED: "false",
      COPYDESK__LLM__PROVIDER: "offline",
      COPYDESK_FERNET_KEYS: fernetKeys,
    },
    stdio: ["ignore", "pipe", "inherit"],
  });
  started.push(child);
  return child;
}

/** `copydesk serve` on a free port: its base URL. */
export async function serve(): Promise<string> {
  const child = start(["serve", "--http", "127.0.0.1:0"]);
  const lines = createInterface({ input: child.stdout! });
  for await (const line of lines) {
    const base = line.split(/\s+/).find((w) => w.endsWith("/api/v1"));
    if (base) return base.slice(0, -"/api/v1".length);
  }
  throw new Error("copydesk serve named no address");
}

/** A shop's home page on 127.0.0.1, for the brand voice analysis to read. */
export async function store(): Promise<{ url: string; close(): void }> {
  const page =
    "<html><head><title>Linen & Loom</title></head><body><h1>Linen & Loom</h1>" +
    "<p>Washed linen bedding, woven in Portugal, made to last for decades.</p></body></html>";
  const server = createServer((_, res) => {
    res.writeHead(200, { "Content-Type": "text/html; charset=utf-8" });
    res.end(page);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}/`, close: () => server.close() };
}

export async function stopAll(): Promise<void> {
  await Promise.all(
    started.map(
      (child) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null) return resolve();
          child.once("exit", () => resolve());
          child.kill("SIGTERM");
        }),
    ),
  );
}

/** Polls `check` until it gives something truthy; fails naming `what` after `timeoutMs`. */
export async function waitFor<T>(what: string, check: () => Promise<T | undefined | null | false>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A token of `role`, made with the CLI. */
export function token(role: string): string {
  const out = copydesk(["tokens", "create", "--role", role, "--name", `ts-${role}-${Math.random().toString(36).slice(2, 8)}`, "--expires", "1h"]);
  return out.trim().split("\n").pop()!;
}

/** A service's webhook endpoint on 127.0.0.1: keeps each request's headers and raw body. */
export async function receiver(): Promise<{
  url: string;
  requests: Array<{ headers: Record<string, string | string[] | undefined>; body: Buffer }>;
  types(): string[];
  close(): void;
}> {
  const requests: Array<{ headers: Record<string, string | string[] | undefined>; body: Buffer }> = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      requests.push({ headers: req.headers, body: Buffer.concat(chunks) });
      res.writeHead(204);
      res.end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/hooks/copydesk`,
    requests,
    types: () => requests.map((r) => JSON.parse(r.body.toString()).type),
    close: () => server.close(),
  };
}
