"""Migrations on deploy: the MigrateFunction as a CloudFormation custom resource.

CloudFormation invokes the function with a `RequestType` (Create, Update, Delete) and a
pre-signed `ResponseURL`, then waits until the function PUTs the outcome there. Create and
Update run `upgrade`; a failure is reported as FAILED, which fails (and rolls back) the
deploy. Delete does nothing: removing the stack, or switching the hook off, never touches
the schema.

During a rollback CloudFormation sends an Update that carries the previous properties, so
`FunctionVersion` goes down; upgrading again would only fail again (the migrate function
still has the new code at that moment) and leave the stack stuck in UPDATE_ROLLBACK_FAILED.
Such an Update is answered SUCCESS without migrating: on PostgreSQL the failed migration was
rolled back with its transaction.
"""

import json
import logging
import urllib.request
from collections.abc import Callable
from typing import Any, TypeGuard

logger = logging.getLogger("taskapi.migrate")

# CloudFormation rejects response bodies over 4096 bytes; the reason is the only long field.
MAX_REASON = 1000
RESPONSE_TIMEOUT_SECONDS = 30

Migrate = Callable[[dict[str, Any]], dict[str, Any]]


def is_custom_resource_event(event: object) -> TypeGuard[dict[str, Any]]:
    """True for CloudFormation's custom-resource requests (not the migrate events)."""
    return isinstance(event, dict) and "RequestType" in event and "ResponseURL" in event


def is_rollback(event: dict[str, Any]) -> bool:
    """An Update back to an older migrate function version: CloudFormation rolling back."""
    if event.get("RequestType") != "Update":
        return False
    new = _version_number(event.get("ResourceProperties", {}).get("FunctionVersion"))
    old = _version_number(event.get("OldResourceProperties", {}).get("FunctionVersion"))
    return new is not None and old is not None and new < old


def _version_number(version: object) -> int | None:
    # `!Ref Function.Version` is the version's ARN, ending in `:<number>`.
    text = str(version or "").rpartition(":")[2]
    return int(text) if text.isdigit() else None


def physical_resource_id(event: dict[str, Any]) -> str:
    """Stable across updates, so CloudFormation never sends a Delete for a replacement."""
    return str(event.get("PhysicalResourceId") or f"{event['LogicalResourceId']}-migrations")


def response_body(
    event: dict[str, Any],
    *,
    status: str,
    reason: str,
    data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON that CloudFormation expects at the ResponseURL."""
    return {
        "Status": status,
        "Reason": reason[:MAX_REASON],
        "PhysicalResourceId": physical_resource_id(event),
        "StackId": event["StackId"],
        "RequestId": event["RequestId"],
        "LogicalResourceId": event["LogicalResourceId"],
        "NoEcho": False,
        # Custom resource attributes must be strings; a fresh database has no revision.
        "Data": {key: "" if value is None else str(value) for key, value in (data or {}).items()},
    }


def send_response(url: str, body: dict[str, Any]) -> None:
    """PUT the outcome to the pre-signed S3 URL that CloudFormation handed us."""
    payload = json.dumps(body).encode()
    # The URL is signed without a content type, so the request must not send one.
    request = urllib.request.Request(  # noqa: S310 (CloudFormation's https URL)
        url,
        data=payload,
        method="PUT",
        headers={"Content-Type": "", "Content-Length": str(len(payload))},
    )
    with urllib.request.urlopen(request, timeout=RESPONSE_TIMEOUT_SECONDS) as response:  # noqa: S310
        response.read()


def handle(event: dict[str, Any], migrate: Migrate) -> dict[str, Any]:
    """Run the request and report it; never raises, or CloudFormation would wait an hour."""
    request_type = event.get("RequestType")
    data: dict[str, Any] = {}
    try:
        if request_type == "Delete":
            status, reason = "SUCCESS", "Delete leaves the schema as it is"
        elif is_rollback(event):
            status, reason = "SUCCESS", "Rollback: schema left as it is"
        elif request_type in ("Create", "Update"):
            result = migrate({"action": "upgrade", "revision": "head"})
            status = "SUCCESS"
            reason = f"Upgraded from {result['before']} to {result['after']}"
            data = {"Before": result["before"], "After": result["after"]}
        else:
            status, reason = "FAILED", f"Unknown RequestType {request_type!r}"
    # Any failure at all must reach CloudFormation as FAILED: that is the protocol.
    except Exception as error:
        logger.exception("migration on deploy failed")
        status, reason, data = "FAILED", f"Migration failed: {error}", {}
    body = response_body(event, status=status, reason=reason, data=data)
    logger.info("custom resource response", extra={"status": status, "reason": body["Reason"]})
    send_response(event["ResponseURL"], body)
    return body
