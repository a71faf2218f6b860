"""Baseline (a): Powertools for AWS Lambda's `APIGatewayHttpResolver` with pydantic
validation (`enable_validation=True`: the query parameter parsed, the return value
validated and serialised through the route's return type), on SQLAlchemy Core."""

import uuid
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver
from aws_lambda_powertools.event_handler.openapi.params import Query
from bench_core import TaskPage, page

app = APIGatewayHttpResolver(enable_validation=True)


@app.get("/api/tasks")
def list_tasks(user_id: Annotated[uuid.UUID, Query()]) -> TaskPage:
    return TaskPage.model_validate(page(user_id))


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return app.resolve(event, context)
