"""Login: one `POST /api/auth/login` through the auth function's handler at each
`BCRYPT_ROUNDS`, against one bare `bcrypt.checkpw` of the same hash in the same process,
and how many bcrypt operations a login costs (counted, not assumed)."""

import json
import statistics
from pathlib import Path
from typing import Any

import bcrypt

from bench.artifacts import Artifacts, run_child
from bench.database import PASSWORD, SUBJECT_SETTINGS, BenchDatabase
from localapi.events import http_event

CHILD = (Path(__file__).resolve().parent / "login_child.py").read_text()


def measure(
    artifacts: Artifacts, database: BenchDatabase, *, rounds: int, repeats: int
) -> dict[str, Any]:
    """A fresh process (a cold container) whose user's hash has the given cost."""
    email = f"login{rounds}@example.com"
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds)).decode()
    database.add_user(email=email, hashed_password=hashed)
    config = {
        "root": str(artifacts.task_roots["auth"]),
        "password": PASSWORD,
        "hash": hashed,
        "repeats": repeats,
        "event": http_event(
            "POST",
            "/api/auth/login",
            headers={"content-type": "application/json"},
            body=json.dumps({"email": email, "password": PASSWORD}),
        ),
    }
    result: dict[str, Any] = run_child(
        artifacts,
        CHILD,
        config,
        env={**SUBJECT_SETTINGS, "BCRYPT_ROUNDS": str(rounds), "DATABASE_URL": database.url},
        what="login benchmark",
    )
    login_ms = statistics.median(result["login_ms"])
    checkpw_ms = statistics.median(result["checkpw_ms"])
    return {
        "rounds": rounds,
        "repeats": repeats,
        "login_ms": login_ms,
        "checkpw_ms": checkpw_ms,
        "ratio": login_ms / checkpw_ms,
        "first_login_ms": result["first_login_ms"],
        "bcrypt_costs_per_login": result["login_bcrypt_costs"],
        "bcrypt_costs_first_login": result["first_login_bcrypt_costs"],
    }
