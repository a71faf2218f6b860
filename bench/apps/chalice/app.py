"""Baseline (b): AWS Chalice, its app object as the Lambda handler (`app.app`), on
SQLAlchemy Core. Chalice serves API Gateway REST APIs (payload 1.0 events); it has no
validation of its own, so the page goes through the same pydantic model as the others."""

import uuid

from bench_core import PAGE_ADAPTER, page
from chalice import BadRequestError, Chalice

app = Chalice(app_name="bench")


@app.route("/api/tasks", methods=["GET"])
def list_tasks() -> object:
    query = app.current_request.query_params or {}
    try:
        user_id = uuid.UUID(query["user_id"])
    except (KeyError, ValueError) as error:
        raise BadRequestError("user_id must be a UUID") from error
    return PAGE_ADAPTER.dump_python(PAGE_ADAPTER.validate_python(page(user_id)), mode="json")


# The name Chalice deploys as the function's handler.
handler = app
