"""Baseline: a bare FastAPI + Mangum app with one `GET /health`, nothing else."""

from datetime import UTC, datetime

from fastapi import FastAPI
from mangum import Mangum
from pydantic import BaseModel


class Health(BaseModel):
    status: str
    timestamp: datetime


app = FastAPI()


@app.get("/health", response_model=Health)
def health() -> Health:
    return Health(status="ok", timestamp=datetime.now(UTC))


handler = Mangum(app, lifespan="off")
