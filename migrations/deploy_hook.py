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

The response is the one call that leaves the VPC for S3: without a NAT gateway or an S3
gateway endpoint it connects to nothing. Each attempt gets a few seconds and there are a
few, so the function gives up (logging why) within `RESPONSE_BUDGET_SECONDS` instead of
its whole timeout; CloudFormation then fails the resource at its `ServiceTimeout`.
"""

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, TypeGuard

logger = logging.getLogger("taskapi.migrate")

# CloudFormation rejects response bodies over 4096 bytes; the reason is the only long field.
MAX_REASON = 1000
# A PUT of under 4 KB to S3 takes well under a second; each attempt may take this long
# to connect and again for each read, then the next one starts after a pause.
RESPONSE_TIMEOUT_SECONDS = 2.0
RESPONSE_RETRY_PAUSES = (0.5, 1.0)
RESPONSE_BUDGET_SECONDS = RESPONSE_TIMEOUT_SECONDS * (len(RESPONSE_RETRY_PAUSES) + 1) + sum(
    RESPONSE_RETRY_PAUSES
)

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


class ResponseNotDeliveredError(Exception):
    """Every attempt to PUT the response failed; the message says what to check."""


def send_response(url: str, body: dict[str, Any]) -> int:
    """PUT the outcome to the pre-signed S3 URL that CloudFormation handed us.

    Retries timeouts, connection errors and S3's 5xx answers; a 4xx (an expired or altered
    signature) would only repeat. Returns the number of attempts it took.
    """
    payload = json.dumps(body).encode()
    attempts = len(RESPONSE_RETRY_PAUSES) + 1
    for attempt in range(1, attempts + 1):
        # The URL is signed without a content type, so the request must not send one.
        request = urllib.request.Request(  # noqa: S310 (CloudFormation's https URL)
            url,
            data=payload,
            method="PUT",
            headers={"Content-Type": "", "Content-Length": str(len(payload))},
        )
        try:
            with urllib.request.urlopen(request, timeout=RESPONSE_TIMEOUT_SECONDS) as response:  # noqa: S310
                response.read()
            return attempt
        except urllib.error.HTTPError as error:
            error.close()  # it holds the response's socket
            if error.code < 500:
                raise ResponseNotDeliveredError(
                    f"S3 refused the response with {error.code}: the pre-signed URL is "
                    "expired or was altered"
                ) from error
            failure: Exception = error
        except (OSError, TimeoutError) as error:  # URLError, refused, reset, timed out
            failure = error
        logger.warning(
            "custom resource response not delivered",
            extra={"attempt": attempt, "error": str(failure)},
        )
        if attempt < attempts:
            time.sleep(RESPONSE_RETRY_PAUSES[attempt - 1])
    raise ResponseNotDeliveredError(
        f"S3 did not take the response in {attempts} attempts of "
        f"{RESPONSE_TIMEOUT_SECONDS:g} s ({failure}). A function in a VPC reaches S3 through "
        "an S3 gateway endpoint (the template's CreateVpcEndpoints) or a NAT gateway."
    )


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
    try:
        send_response(event["ResponseURL"], body)
    except ResponseNotDeliveredError as error:
        # Not raised: CloudFormation invokes asynchronously, so Lambda would run the whole
        # request twice more, minutes apart, and hit the same wall. CloudFormation fails
        # the resource when its ServiceTimeout passes.
        logger.error(
            "custom resource response lost; CloudFormation fails this resource at its "
            "ServiceTimeout",
            extra={"error": str(error), "status": status},
        )
    return body
