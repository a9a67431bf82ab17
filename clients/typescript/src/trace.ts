/**
 * The caller's W3C trace context, for the jobs and requests it makes: when the
 * `@opentelemetry/api` package is installed and a span is active, its `traceparent`
 * (and `tracestate`) go with every job enqueued and every request sent, so a job's run,
 * its model calls and its post are in the caller's trace. Otherwise nothing is added.
 */
export interface TraceContext {
  traceparent?: string;
  tracestate?: string;
}

export function activeTrace(): TraceContext {
  let api: typeof import("@opentelemetry/api");
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    api = require("@opentelemetry/api");
  } catch {
    return {};
  }
  const carrier: Record<string, string> = {};
  api.propagation.inject(api.context.active(), carrier);
  const found: TraceContext = {};
  if (carrier.traceparent) found.traceparent = carrier.traceparent;
  if (carrier.tracestate) found.tracestate = carrier.tracestate;
  return found;
}
