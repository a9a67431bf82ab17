"""copydesk for Python services: enqueue jobs inside your own transaction (psycopg 3
or SQLAlchemy), start pipelines and decide approvals as the CLI does, and call the
HTTP API.

    import psycopg
    from copydesk import BrandVoiceAnalysis, Pipeline, enqueue

    with psycopg.connect(DATABASE_URL) as conn, conn.transaction():
        job = enqueue(conn, BrandVoiceAnalysis(store_url="https://shop.example",
                                               pipeline=Pipeline(channels=["blog"])))
"""

from . import kinds
from ._records import JobArgs, Record
from .api import Client, Problem
from .kinds import *  # noqa: F401,F403 (one class per kind and per named object, generated)
from .queue import (
    AlreadyDecided,
    ApprovalNotFound,
    Decision,
    Enqueued,
    IdempotencyKeyTaken,
    InvalidInput,
    Started,
    decide_approval,
    enqueue,
    start_pipeline,
    validate,
)
from .webhooks import WebhookVerificationError, verify_webhook

__all__ = [
    "AlreadyDecided",
    "ApprovalNotFound",
    "Client",
    "Decision",
    "Enqueued",
    "IdempotencyKeyTaken",
    "InvalidInput",
    "JobArgs",
    "Problem",
    "Record",
    "Started",
    "decide_approval",
    "enqueue",
    "start_pipeline",
    "validate",
    "verify_webhook",
    "WebhookVerificationError",
    *kinds.__all__,
]
