// Checking a webhook copydesk sent: a lifecycle event to a subscription (`copydesk
// events subscribe`) or a notification to a channel, each signed as the Standard
// Webhooks specification says. (The specification's own library, `npm install
// standardwebhooks`, checks them the same way.)

import { createHmac, timingSafeEqual } from "node:crypto";

/** A message that is not copydesk's, was changed, or is too old or too new. */
export class WebhookVerificationError extends Error {
  name = "WebhookVerificationError";
}

/** A lifecycle event as a subscription receives it. */
export interface EventMessage {
  type: "approval.waiting" | "approval.decided" | "publication.made" | "publication.failed" | "pipeline.channel_finished";
  timestamp: string;
  data: Record<string, any>;
}

/**
 * Checks `webhook-signature` over `webhook-id`, `webhook-timestamp` and the raw `body`
 * with the subscription's `whsec_` secret, and that the timestamp is within
 * `toleranceSecs` of now (a replay of an old message is refused); returns the parsed
 * message. Keep the message id (`webhook-id`, the same on every retry) to drop a
 * repeat.
 */
export function verifyWebhook<T = EventMessage>(
  secret: string,
  headers: Record<string, string | string[] | undefined> | Headers,
  body: string | Buffer,
  options: { toleranceSecs?: number; now?: number } = {},
): T {
  const header = (name: string): string => {
    const value =
      headers instanceof Headers
        ? headers.get(name)
        : Object.entries(headers).find(([k]) => k.toLowerCase() === name)?.[1];
    const one = Array.isArray(value) ? value[0] : value;
    if (!one) throw new WebhookVerificationError(`no ${name} header`);
    return one;
  };
  const id = header("webhook-id");
  const timestamp = header("webhook-timestamp");
  const signatures = header("webhook-signature");
  const sentAt = Number(timestamp);
  if (!Number.isInteger(sentAt)) {
    throw new WebhookVerificationError(`webhook-timestamp ${JSON.stringify(timestamp)} is not a Unix time`);
  }
  const now = options.now ?? Date.now() / 1000;
  const tolerance = options.toleranceSecs ?? 300;
  if (Math.abs(now - sentAt) > tolerance) {
    throw new WebhookVerificationError(
      `the message was signed ${Math.trunc(now - sentAt)} s from now, beyond ${tolerance} s`,
    );
  }
  const raw = typeof body === "string" ? Buffer.from(body) : body;
  const key = Buffer.from(secret.replace(/^whsec_/, ""), "base64");
  const expected = createHmac("sha256", key)
    .update(`${id}.${timestamp}.`)
    .update(raw)
    .digest();
  for (const signature of signatures.split(" ")) {
    const [version, value] = signature.split(",", 2);
    const given = Buffer.from(value ?? "", "base64");
    if (version === "v1" && given.length === expected.length && timingSafeEqual(given, expected)) {
      return JSON.parse(raw.toString("utf8")) as T;
    }
  }
  throw new WebhookVerificationError("no signature matches: another secret, or the body was changed");
}
