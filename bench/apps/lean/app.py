"""Baseline (c): a lean FastAPI + Mangum route on SQLAlchemy Core, no ORM, no authentication.

An `async def` route (no worker thread per request under Mangum) returning the page that
`bench_core` reads, validated and serialised once through FastAPI's response model.
"""

import uuid

from bench_core import TaskPage, page
from fastapi import FastAPI
from mangum import Mangum

app = FastAPI()


@app.get("/api/tasks", response_model=TaskPage)
async def list_tasks(user_id: uuid.UUID) -> dict[str, object]:
    return page(user_id)


handler = Mangum(app, lifespan="off")
