"""Writing copydesk's rows inside the caller's own transaction.

Each function takes the caller's connection — a psycopg 3 connection or an SQLAlchemy
`Connection` — and runs its statements there, so the job, the project or the decision
commits or rolls back with the caller's own writes: a job enqueued in a transaction
that rolls back never existed, and no worker runs it. Nothing here commits.

Which tenant a row belongs to is the database's to decide, from the session's role
(a tenant's own role writes that tenant's rows; the owner writes the `default`
tenant's), exactly as for plain SQL.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
import uuid
from typing import Any, Literal, Sequence

import jsonschema

from . import _trace
from ._records import JobArgs
from .kinds import SCHEMAS, BrandVoiceAnalysis, Pipeline


class InvalidInput(ValueError):
    """A job's input that its kind's schema refuses; nothing was written."""

    def __init__(self, kind: str, errors: list[str]):
        self.kind = kind
        self.errors = errors
        super().__init__(f"input for {kind} is invalid: " + "; ".join(errors))


class IdempotencyKeyTaken(RuntimeError):
    """The idempotency key names a job this session cannot see (another tenant's)."""


class ApprovalNotFound(LookupError):
    """No approval with this id (or it is another tenant's)."""


class AlreadyDecided(RuntimeError):
    """The approval was decided before: a decision cannot be changed."""

    def __init__(self, approval_id: uuid.UUID, status: str):
        self.approval_id = approval_id
        self.status = status
        super().__init__(f"approval {approval_id} is {status}, not pending: a decision cannot be changed")


@dataclasses.dataclass(frozen=True)
class Enqueued:
    """A job enqueued: its id, and False when the idempotency key named an existing job."""

    id: uuid.UUID
    created: bool


@dataclasses.dataclass(frozen=True)
class Started:
    """A pipeline started: its project and its brand voice analysis job."""

    project_id: uuid.UUID
    job: Enqueued


@dataclasses.dataclass(frozen=True)
class Decision:
    """An approval decided: the worker applies it once the transaction commits."""

    approval_id: uuid.UUID
    job_id: uuid.UUID
    status: str


def validate(kind: str, data: dict[str, Any]) -> None:
    """Checks `data` against `kind`'s schema (`jobs/<kind>/schema.json`), as the
    workers do when they claim the job; raises `InvalidInput` naming each field."""
    schema = SCHEMAS.get(kind)
    if schema is None:
        raise InvalidInput(kind, [f"unknown job kind {kind!r}: known kinds are {', '.join(SCHEMAS)}"])
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        raise InvalidInput(
            kind,
            [f"{'/'.join(map(str, e.absolute_path)) or 'the top level'}: {e.message}" for e in errors],
        )


def enqueue(
    conn: Any,
    args: JobArgs,
    *,
    project_id: uuid.UUID | str | None = None,
    priority: int | None = None,
    run_at: datetime.datetime | None = None,
    max_attempts: int | None = None,
    idempotency_key: str | None = None,
    traceparent: str | None = None,
    tracestate: str | None = None,
) -> Enqueued:
    """Enqueues one job in the caller's transaction (`conn`: psycopg 3 or SQLAlchemy).

    The input is checked against its kind's schema first (`InvalidInput`, nothing
    written). An idempotency key already used gives that job's id, `created=False`.
    Unset options take the table's defaults (priority 0, now, 5 attempts). The job
    carries `traceparent`/`tracestate` when given, else the active OpenTelemetry span's
    (when the `opentelemetry-api` package is installed), else none.
    """
    data = args.to_json()
    validate(args.KIND, data)
    trace = {"traceparent": traceparent, "tracestate": tracestate} if traceparent else _trace.active()
    columns = {
        "kind": args.KIND,
        "input": json.dumps(data),
        **options(project_id, priority, run_at, max_attempts, idempotency_key),
        **{k: v for k, v in trace.items() if v},
    }
    casts = {"input": "jsonb", "project_id": "uuid", "run_at": "timestamptz"}
    values = ", ".join(
        f"CAST(%({c})s AS {casts[c]})" if c in casts else f"%({c})s" for c in columns
    )
    row = _fetchone(
        conn,
        f"INSERT INTO jobs ({', '.join(columns)}) VALUES ({values}) "
        "ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING "
        "RETURNING id",
        columns,
    )
    if row is not None:
        return Enqueued(id=_uuid(row[0]), created=True)
    existing = _fetchone(
        conn, "SELECT id FROM jobs WHERE idempotency_key = %(key)s", {"key": idempotency_key}
    )
    if existing is None:
        raise IdempotencyKeyTaken(
            f"idempotency key {idempotency_key!r} names a job this session cannot see"
        )
    return Enqueued(id=_uuid(existing[0]), created=False)


def options(
    project_id: uuid.UUID | str | None,
    priority: int | None,
    run_at: datetime.datetime | None,
    max_attempts: int | None,
    idempotency_key: str | None,
) -> dict[str, Any]:
    """A job's options that were set, as the row (and the API's body) takes them."""
    if run_at is not None and run_at.tzinfo is None:
        raise ValueError(f"run_at {run_at!r} has no time zone: give one (datetime.timezone.utc)")
    given = {
        "project_id": str(project_id) if project_id is not None else None,
        "priority": priority,
        "run_at": run_at.isoformat() if run_at is not None else None,
        "max_attempts": max_attempts,
        "idempotency_key": idempotency_key,
    }
    return {name: value for name, value in given.items() if value is not None}


def start_pipeline(
    conn: Any,
    *,
    store_url: str,
    channels: Sequence[Literal["blog", "linkedin", "x", "facebook"]],
    project_id: uuid.UUID | str | None = None,
    project_name: str | None = None,
    topic: str | None = None,
    instructions: str | None = None,
    schedule: datetime.datetime | None = None,
    idempotency_key: str | None = None,
    traceparent: str | None = None,
    tracestate: str | None = None,
) -> Started:
    """Starts the pipeline as `copydesk pipeline start` does, in the caller's
    transaction: creates the project when `project_name` is given (else uses
    `project_id`), and enqueues its brand voice analysis, after which drafts for each
    channel follow (once the voice is approved, where approvals are on)."""
    if (project_id is None) == (project_name is None):
        raise ValueError("give project_id (an existing project) or project_name (a new one), not both")
    args = BrandVoiceAnalysis(
        store_url=store_url,
        pipeline=Pipeline(
            channels=list(channels), topic=topic, instructions=instructions, schedule=schedule
        ),
    )
    # Checked before the project is made, so a bad input leaves nothing behind.
    validate(args.KIND, args.to_json())
    if project_name is not None:
        row = _fetchone(
            conn,
            "INSERT INTO projects (name, store_url) VALUES (%(name)s, %(url)s) RETURNING id",
            {"name": project_name, "url": store_url},
        )
        project_id = _uuid(row[0])
    job = enqueue(
        conn,
        args,
        project_id=project_id,
        idempotency_key=idempotency_key,
        traceparent=traceparent,
        tracestate=tracestate,
    )
    return Started(project_id=_uuid(project_id), job=job)


def decide_approval(
    conn: Any,
    approval_id: uuid.UUID | str,
    decision: Literal["approved", "rejected"],
    *,
    by: str,
    notes: str | None = None,
) -> Decision:
    """Approves or rejects a pending approval in the caller's transaction, as
    `copydesk approvals approve|reject` does. A worker applies the decision once it
    commits (the next step, or a rewrite with the notes as feedback)."""
    if decision not in ("approved", "rejected"):
        raise ValueError(f"decision {decision!r}: approved or rejected")
    if not by.strip():
        raise ValueError("by: who decided (the audit names them)")
    row = _fetchone(
        conn,
        "UPDATE approvals SET status = %(status)s, decided_by = %(by)s, "
        "notes = coalesce(%(notes)s, notes) "
        "WHERE id = CAST(%(id)s AS uuid) AND status = 'pending' RETURNING id, job_id, status",
        {"id": str(approval_id), "status": decision, "by": by, "notes": notes},
    )
    if row is not None:
        return Decision(approval_id=_uuid(row[0]), job_id=_uuid(row[1]), status=row[2])
    current = _fetchone(
        conn,
        "SELECT status FROM approvals WHERE id = CAST(%(id)s AS uuid)",
        {"id": str(approval_id)},
    )
    if current is None:
        raise ApprovalNotFound(f"no approval {approval_id}")
    raise AlreadyDecided(_uuid(approval_id), current[0])


_NAMED = re.compile(r"%\((\w+)\)s")


def _fetchone(conn: Any, sql: str, params: dict[str, Any]) -> Sequence[Any] | None:
    """One row of `sql` on the caller's connection: psycopg 3 (`%(name)s` as written)
    or SQLAlchemy (`:name`)."""
    if hasattr(conn, "exec_driver_sql"):
        from sqlalchemy import text

        return conn.execute(text(_NAMED.sub(r":\1", sql)), params).first()
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchone()


def _uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
