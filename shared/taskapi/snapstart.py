"""Lambda SnapStart runtime hooks (template parameter `EnableSnapStart`).

With SnapStart, Lambda runs a function's initialisation once, when a version is
published, snapshots the memory of the initialised environment, and starts every later
environment of that version from the snapshot. So:

- before the snapshot, whatever a first request would still load or build is loaded and
  built now, while it costs nothing at restore: the engine (SQLAlchemy's dialect and
  psycopg2, no connection), one request through the whole handler that is refused before
  any database work, and each function's own warm-ups (the auth function's dummy hash);
  nothing here touches the database, which a snapshot could not keep a connection to;
- after a restore, state that must not be shared between the environments restored from
  one snapshot, or that went stale while it sat in the cache, is renewed: pooled
  connections and AWS clients are dropped, secrets are read again (`taskapi.state`),
  the `random` module is reseeded, and the first request is logged as the cold start
  it is.

The hooks are registered with `snapshot-restore-py`, which the Lambda runtime calls; it
never calls them without SnapStart, and nothing else does, so this costs a function that
runs without it two registrations at import.
"""

import gc
import logging
import random
import time
from collections.abc import Callable, Iterable
from typing import Any

from snapshot_restore_py import register_after_restore, register_before_snapshot

from taskapi import logs, state

logger = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


class _SnapshotContext:
    """The Lambda context of the warm-up invocation: there is no real request. Of a
    context, the app reads the request id alone (`taskapi.logs`), and Mangum nothing."""

    aws_request_id = "snapstart-warm-up"


def _warm_up_event(method: str, path: str, body: str | None) -> dict[str, Any]:
    # An HTTP API payload 2.0 event as API Gateway sends it, for the warm-up alone.
    return {
        "version": "2.0",
        "routeKey": f"{method} {path}",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"content-type": "application/json", "host": "snapstart.invalid"},
        "requestContext": {
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
            },
            "requestId": "snapstart-warm-up",
            "routeKey": f"{method} {path}",
            "stage": "$default",
            "timeEpoch": int(time.time() * 1000),
        },
        "body": body,
        "isBase64Encoded": False,
    }


def prepare_for_snapshot(
    handler: Handler, *, requests: Iterable[tuple[str, str, str | None]]
) -> None:
    """Register the function's hooks: `requests` are (method, path, body) sent through
    `handler` before the snapshot, each one the app refuses before it would use the
    database."""
    register_before_snapshot(before_snapshot, handler, tuple(requests))
    register_after_restore(after_restore)


def before_snapshot(handler: Handler, requests: tuple[tuple[str, str, str | None], ...]) -> None:
    from taskapi.db import get_engine

    # Imports the dialect and psycopg2 and builds the pool; connects nowhere.
    get_engine()
    with logs.log_context(snapstart_warm_up=True):
        for method, path, body in requests:
            response = handler(_warm_up_event(method, path, body), _SnapshotContext())
            logger.info("snapstart warm-up", extra={"path": path, "status": response["statusCode"]})
    # Everything alive now lives as long as the environment: out of the collector's way,
    # so that no collection after a restore walks the import-time objects again.
    gc.collect()
    gc.freeze()


def after_restore() -> None:
    # One snapshot starts many environments: each needs random state of its own. (The
    # `secrets` module, uuid4 and bcrypt's salts read the kernel's generator each time.)
    random.seed()
    # Connections and sockets cannot outlive a snapshot, and secrets may have rotated
    # while it sat in the cache: the next request connects and reads them afresh.
    state.reset(restoring=True)
    # The warm-up used up the cold-start flag; the first request after a restore is the
    # environment's first.
    logs.mark_cold_start()
