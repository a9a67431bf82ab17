"""The caller's W3C trace context, for the jobs and requests it makes.

When the OpenTelemetry API is installed and a span is active, its `traceparent` (and
`tracestate`) go with every job this client enqueues and every request it sends, so a
job's run, its model calls and its post are in the caller's trace. Without the
package, or with no span active, nothing is added.
"""

from __future__ import annotations


def active() -> dict[str, str]:
    """`{"traceparent": …, "tracestate": …}` of the active span; `{}` when none."""
    try:
        from opentelemetry import propagate
    except ImportError:
        return {}
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return {k: v for k, v in carrier.items() if k in ("traceparent", "tracestate") and v}
