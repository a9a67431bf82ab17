// Checking a job's input against its kind's schema (jobs/<kind>/schema.json), as the
// workers do when they claim the job, before anything is written.

import Ajv2020 from "ajv/dist/2020";
import addFormats from "ajv-formats";

import { Kind, SCHEMAS } from "./kinds";

/** A job's input that its kind's schema refuses; nothing was written. */
export class InvalidInput extends Error {
  constructor(
    readonly kind: string,
    readonly errors: string[],
  ) {
    super(`input for ${kind} is invalid: ${errors.join("; ")}`);
    this.name = "InvalidInput";
  }
}

const ajv = new Ajv2020({ allErrors: true, strict: false });
addFormats(ajv);
const validators = new Map(
  Object.entries(SCHEMAS).map(([kind, schema]) => [kind, ajv.compile(schema)]),
);

/** Checks `input` against `kind`'s schema; throws `InvalidInput` naming each field. */
export function validate(kind: Kind | string, input: unknown): void {
  const check = validators.get(kind);
  if (!check) {
    throw new InvalidInput(kind, [
      `unknown job kind ${JSON.stringify(kind)}: known kinds are ${[...validators.keys()].join(", ")}`,
    ]);
  }
  if (!check(input)) {
    throw new InvalidInput(
      kind,
      (check.errors ?? []).map((e) => {
        const where = e.instancePath.replace(/^\//, "") || "the top level";
        const extra =
          e.keyword === "additionalProperties"
            ? ` (${JSON.stringify((e.params as { additionalProperty: string }).additionalProperty)})`
            : e.keyword === "enum"
              ? ` (${JSON.stringify((e.params as { allowedValues: unknown[] }).allowedValues)})`
              : "";
        return `${where}: ${e.message}${extra}`;
      }),
    );
  }
}
