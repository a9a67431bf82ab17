"""The HTTP API (`copydesk serve`, `/api/v1`), on httpx.

Every error the API answers is an RFC 9457 problem document; `Client` raises it as
`Problem`, with the status, the problem's type (`urn:copydesk:problem:<kind>`) and the
detail naming what is wrong. The API's whole description is at `/api/v1/openapi.json`.
"""

from __future__ import annotations

import datetime
import uuid
from typing import Any, Iterator, Literal, Sequence

import httpx

from . import _trace
from ._records import JobArgs
from .queue import options, validate


class Problem(Exception):
    """An error answer of the API (`application/problem+json`)."""

    def __init__(self, status: int, type: str, title: str, detail: str):
        self.status = status
        self.type = type
        self.title = title
        self.detail = detail
        super().__init__(f"{status} {title}: {detail}")

    @property
    def kind(self) -> str:
        """The last part of `type`: `not-found`, `forbidden`, `invalid`, `conflict`…"""
        return self.type.rsplit(":", 1)[-1]


class Client:
    """A token's view of one copydesk: `Client("http://127.0.0.1:8080", token)`.

    `traceparent`, when given, is sent with every request, so the jobs a call makes
    carry the caller's trace."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 30.0,
        traceparent: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ):
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        if traceparent:
            headers["traceparent"] = traceparent
        self._http = httpx.Client(
            base_url=base_url.rstrip("/") + "/api/v1",
            headers=headers,
            timeout=timeout,
            transport=transport,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, *, json: Any = None, params: dict | None = None) -> Any:
        """One call; the answer's JSON, or `Problem` for an error answer. Without a
        `traceparent` given to the client, the active OpenTelemetry span's is sent."""
        query = {k: str(v) for k, v in (params or {}).items() if v is not None}
        headers = {} if "traceparent" in self._http.headers else _trace.active()
        response = self._http.request(method, path, json=json, params=query, headers=headers)
        if response.is_success:
            return response.json() if response.content else None
        raise _problem(response)

    # Jobs

    def enqueue(
        self,
        args: JobArgs,
        *,
        project_id: uuid.UUID | str | None = None,
        priority: int | None = None,
        run_at: datetime.datetime | None = None,
        max_attempts: int | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Enqueues one job (operator): `{"id", "created"}`."""
        data = args.to_json()
        validate(args.KIND, data)
        body = {
            "kind": args.KIND,
            "input": data,
            **options(project_id, priority, run_at, max_attempts, idempotency_key),
        }
        return self.request("POST", "/jobs", json=body)

    def job(self, job_id: uuid.UUID | str) -> dict[str, Any]:
        """One job with its runs, steps, artifacts, approvals and publishing attempts."""
        return self.request("GET", f"/jobs/{job_id}")

    def jobs(
        self,
        *,
        status: str | None = None,
        kind: str | None = None,
        project_id: uuid.UUID | str | None = None,
        page_size: int = 100,
    ) -> Iterator[dict[str, Any]]:
        """Every job the filter matches, newest first, following the pages."""
        return self._pages(
            "/jobs", {"status": status, "kind": kind, "project_id": project_id, "limit": page_size}
        )

    # Pipelines and approvals

    def start_pipeline(
        self,
        *,
        store_url: str,
        channels: Sequence[Literal["blog", "linkedin", "x", "facebook"]],
        project_id: uuid.UUID | str | None = None,
        project_name: str | None = None,
        topic: str | None = None,
        instructions: str | None = None,
        schedule: datetime.datetime | None = None,
    ) -> dict[str, Any]:
        """Starts the pipeline (operator): `{"project_id", "job"}`."""
        body = {
            "store_url": store_url,
            "channels": list(channels),
            "project_id": str(project_id) if project_id else None,
            "project_name": project_name,
            "topic": topic,
            "instructions": instructions,
            "schedule": schedule.isoformat() if schedule else None,
        }
        return self.request("POST", "/pipelines", json={k: v for k, v in body.items() if v is not None})

    def pipeline(self, project_id: uuid.UUID | str) -> dict[str, Any]:
        """A project's pipeline: each channel's state, drafts, scores and publications."""
        return self.request("GET", f"/pipelines/{project_id}")

    def approvals(self, *, status: str | None = "pending", project_id: uuid.UUID | str | None = None) -> Iterator[dict[str, Any]]:
        """Approvals, pending ones by default, following the pages."""
        return self._pages("/approvals", {"status": status, "project_id": project_id, "limit": 100})

    def decide_approval(
        self,
        approval_id: uuid.UUID | str,
        decision: Literal["approved", "rejected"],
        *,
        notes: str | None = None,
    ) -> dict[str, Any]:
        """Approves or rejects (approver); the audit names the token."""
        verb = {"approved": "approve", "rejected": "reject"}.get(decision)
        if verb is None:
            raise ValueError(f"decision {decision!r}: approved or rejected")
        body = {"notes": notes} if notes is not None else {}
        return self.request("POST", f"/approvals/{approval_id}/{verb}", json=body)

    def _pages(self, path: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        cursor = None
        while True:
            page = self.request("GET", path, params={**params, "cursor": cursor})
            yield from page["items"]
            cursor = page.get("next")
            if not cursor:
                return


def _problem(response: httpx.Response) -> Problem:
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    return Problem(
        status=response.status_code,
        type=str(body.get("type", "about:blank")),
        title=str(body.get("title", response.reason_phrase)),
        detail=str(body.get("detail", response.text[:500])),
    )
