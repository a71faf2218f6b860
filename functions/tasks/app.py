"""TasksFunction: `/api/tasks` and `/api/tasks/*`, the signed-in user's tasks."""

from taskapi.factory import create_app, make_handler
from taskapi.snapstart import prepare_for_snapshot
from tasks_routes import router

app = create_app(
    title="Task API: tasks",
    description="Create, list, change and delete the signed-in user's tasks.",
    routers=[router],
)

handler = make_handler(app)
# SnapStart (EnableSnapStart): a request that is refused before any database work warms
# the whole path before the snapshot.
prepare_for_snapshot(handler, requests=[("POST", "/api/tasks", "{}")])
