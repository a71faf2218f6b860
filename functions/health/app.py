"""HealthFunction: liveness, the database check, the API's one OpenAPI document, and the
scheduled check that EventBridge invokes."""

from typing import Any

from health_routes import router
from health_schedule import is_scheduled_event, scheduled_check
from taskapi.factory import create_app, make_handler
from taskapi.snapstart import prepare_for_snapshot

# No database at start-up: `GET /health` must not load SQLAlchemy (see health_check.py).
app = create_app(
    title="Task API: health",
    description="Liveness and database checks for load balancers and monitors.",
    database=False,
    routers=[router],
)

http_handler = make_handler(app)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    # Mangum raises on events that are not HTTP; EventBridge's schedule is one.
    if is_scheduled_event(event):
        return scheduled_check(context)
    return http_handler(event, context)


# SnapStart (EnableSnapStart): before the snapshot, `GET /health` warms the path and the
# engine is built, so that a first `GET /health/db` after a restore imports nothing.
prepare_for_snapshot(handler, requests=[("GET", "/health", None)])
