"""The bases of the generated input types: how one becomes a job's `input`."""

from __future__ import annotations

import dataclasses
import datetime
import uuid
from typing import Any, ClassVar


class Record:
    """An object inside a job's input: a frozen dataclass whose unset fields are left out."""

    def to_json(self) -> dict[str, Any]:
        """The object as the job's input holds it: unset (None) fields left out, ids and
        times as text."""
        out: dict[str, Any] = {}
        for field in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, field.name)
            if value is not None:
                out[field.name.rstrip("_")] = _plain(value)
        return out


class JobArgs(Record):
    """A kind's input: `KIND` is the job's kind."""

    KIND: ClassVar[str]


def _plain(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_json()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            raise ValueError(f"{value!r} has no time zone: give one (datetime.timezone.utc)")
        return value.isoformat()
    return value
