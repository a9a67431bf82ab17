"""What the client's tests run against: a real Postgres migrated by copydesk
(`COPYDESK_TEST_DATABASE_URL`, a fresh database the test harness made) and the real
`copydesk` binary (`COPYDESK_BIN`): a worker running what the tests enqueue, and
`copydesk serve` for the HTTP client. `cargo test --test clients` sets both."""

from __future__ import annotations

import base64
import http.server
import json
import os
import subprocess
import threading
from pathlib import Path
from typing import Iterator

import psycopg
import pytest


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise pytest.UsageError(f"{name} is not set: run these tests through `cargo test --test clients`")
    return value


@pytest.fixture(scope="session")
def database_url() -> str:
    return _env("COPYDESK_TEST_DATABASE_URL")


@pytest.fixture(scope="session")
def copydesk_bin() -> str:
    return _env("COPYDESK_BIN")


#: The Fernet keys the CLI seals subscriptions with and the worker opens them with
#: (the harness's, or made here when run on their own).
FERNET_KEYS = os.environ.get("COPYDESK_FERNET_KEYS") or base64.urlsafe_b64encode(os.urandom(32)).decode()


def run_copydesk(copydesk_bin: str, database_url: str, *args: str, stdin: str | None = None) -> str:
    """Runs the CLI to the end; its stdout, or the test fails with its stderr."""
    done = subprocess.run(
        [copydesk_bin, *args],
        env={
            **os.environ,
            "DATABASE_URL": database_url,
            "RUST_LOG": "warn",
            "COPYDESK_FERNET_KEYS": FERNET_KEYS,
            "COPYDESK__FETCH__ALLOW_LOOPBACK": "true",
        },
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"copydesk {' '.join(args)}: {done.stderr}"
    return done.stdout


def _start(copydesk_bin: str, database_url: str, log: Path, *args: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "RUST_LOG": "warn,copydesk=info",
        "COPYDESK__WORKER__POLL_INTERVAL_MS": "200",
        "COPYDESK__FETCH__ALLOW_LOOPBACK": "true",
        "COPYDESK__CATALOG__ENABLED": "false",
        "COPYDESK__LLM__PROVIDER": "offline",
        "COPYDESK_FERNET_KEYS": FERNET_KEYS,
    }
    return subprocess.Popen(
        [copydesk_bin, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
    )


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def worker(copydesk_bin: str, database_url: str, tmp_path_factory) -> Iterator[subprocess.Popen]:
    """One `copydesk worker` for the whole session, stopped (SIGTERM) at the end."""
    process = _start(copydesk_bin, database_url, tmp_path_factory.mktemp("worker") / "worker.log", "worker")
    yield process
    _stop(process)


@pytest.fixture(scope="session")
def server(copydesk_bin: str, database_url: str, tmp_path_factory) -> Iterator[str]:
    """`copydesk serve` on a free port: its base URL."""
    process = _start(
        copydesk_bin, database_url, tmp_path_factory.mktemp("serve") / "serve.log",
        "serve", "--http", "127.0.0.1:0",
    )
    line = process.stdout.readline()
    base = next((w[: -len("/api/v1")] for w in line.split() if w.endswith("/api/v1")), None)
    assert base, f"no address in {line!r}"
    yield base
    _stop(process)


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(database_url) as connection:
        yield connection


@pytest.fixture(scope="session")
def store() -> Iterator[str]:
    """A shop's home page on 127.0.0.1, for the brand voice analysis to read."""
    page = (
        b"<html><head><title>Linen & Loom</title></head><body><h1>Linen & Loom</h1>"
        b"<p>Washed linen bedding, woven in Portugal, made to last for decades.</p>"
        b"<p>We write plainly and warmly, like a neighbour who knows fabric.</p></body></html>"
    )

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


class Receiver:
    """A service's webhook endpoint on 127.0.0.1: keeps each request's headers and raw
    body, and answers 204."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        received = self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hooks/copydesk"

    def types(self) -> list[str]:
        return [json.loads(body)["type"] for _, body in self.requests]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.httpd.shutdown()
