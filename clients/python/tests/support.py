"""Helpers of the client's tests."""

from __future__ import annotations

import time
from typing import Callable

import psycopg
import pytest


def wait_for(what: str, check: Callable[[], object], timeout: float = 60.0) -> object:
    """Polls `check` until it returns something truthy; fails naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout} s")
        time.sleep(0.1)


def one(database_url: str, sql: str, *params: object) -> tuple | None:
    """One row, read by the owner in a transaction of its own."""
    with psycopg.connect(database_url, autocommit=True) as c:
        return c.execute(sql, params).fetchone()
