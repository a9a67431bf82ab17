// copydesk for TypeScript services: enqueue jobs inside your own transaction
// (node-postgres, Drizzle), start pipelines and decide approvals as the CLI does, and
// call the HTTP API.

export * from "./kinds";
export * from "./queue";
export * from "./api";
export { InvalidInput, validate } from "./validate";
export * from "./webhooks";
export { TraceContext, activeTrace } from "./trace";
