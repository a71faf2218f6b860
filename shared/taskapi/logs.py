"""Structured JSON logs: one object per line, which CloudWatch Logs Insights can query."""

import json
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, TextIO

# Attributes every LogRecord has; anything else was passed through `extra=`.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


# Fields every log line of the current invocation carries (the Lambda request id, the
# cold-start flag...). A context variable, not a global: it follows the request into the
# event loop task and the thread pool that runs plain `def` routes.
_log_context: ContextVar[Mapping[str, Any]] = ContextVar(
    "taskapi_log_context", default=MappingProxyType({})
)
_cold_start = True


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add `fields` to every log line written inside the block."""
    token = _log_context.set(MappingProxyType({**_log_context.get(), **fields}))
    try:
        yield
    finally:
        _log_context.reset(token)


def trace_id(headers: Mapping[str, str] | None = None) -> str | None:
    """The X-Ray trace header of this invocation: what Lambda sets in `_X_AMZN_TRACE_ID`
    for each invocation (with tracing on, or passed through), else the request's own
    `X-Amzn-Trace-Id` header (API Gateway adds one to every request)."""
    return os.environ.get("_X_AMZN_TRACE_ID") or (headers or {}).get("x-amzn-trace-id")


def invocation_fields(context: Any, headers: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The Lambda request id, the trace id, and whether this is the container's first
    invocation."""
    global _cold_start
    request_id = getattr(context, "aws_request_id", None)
    if request_id is not None and _log_context.get().get("lambda_request_id") == request_id:
        # Already bound further out (by a handler that wraps Mangum): keep its flag.
        return {
            "lambda_request_id": request_id,
            "cold_start": _log_context.get().get("cold_start"),
            "trace_id": trace_id(headers) or _log_context.get().get("trace_id"),
        }
    cold_start, _cold_start = _cold_start, False
    return {
        "lambda_request_id": request_id,
        "cold_start": cold_start,
        "trace_id": trace_id(headers),
    }


def mark_cold_start() -> None:
    """Make the next invocation count as the container's first again: after a SnapStart
    restore it is, although the warm-up before the snapshot came first."""
    global _cold_start
    _cold_start = True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_log_context.get(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class StdoutHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever `sys.stdout` is when a record arrives, not when it was created:
    output capture (pytest's, a local server's) replaces it after the app starts."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stdout
        super().emit(record)


def configure_logging(level: str) -> None:
    """Send the root logger's records to stdout as JSON; safe to call more than once."""
    root = logging.getLogger()
    # The Lambda runtime installs its own text handler; replace it so every line is JSON.
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = StdoutHandler()
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Alembic announces each of its plugins at INFO whenever it is imported (seven lines per
    # migrate function cold start), and Mangum writes a line of its own per request ("GET
    # /api/tasks 200"), which the request line already says with more: a second JSON line
    # that cost about as much as the first. Only worth reading when
    # debugging.
    quiet = logging.DEBUG if level.upper() == "DEBUG" else logging.WARNING
    for name in ("alembic.runtime.plugins", "mangum.http"):
        logging.getLogger(name).setLevel(quiet)
