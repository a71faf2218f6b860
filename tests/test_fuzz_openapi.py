"""Generated requests (schemathesis) from the committed OpenAPI document, answered by the real
handlers: no 5xx, and every response matches the documented statuses, headers and bodies.

Each operation gets FUZZ_EXAMPLES generated cases (default 15, fixed seed, so a run is
repeatable) on SQLite and on PostgreSQL; `make fuzz` raises the count. Authenticated
operations carry a valid access token of a signed-up user who owns a few tasks, so the
generated ids also hit real tasks, not only 404s.
"""

import os
import uuid
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
import schemathesis
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlmodel import Session, col

from taskapi.db import get_engine
from taskapi.models import AuthSession, User, utcnow
from taskapi.passwords import hash_password
from tests.auth_helpers import PASSWORD
from tests.conftest import ROOT, Database
from tests.hardening_helpers import lambda_session
from tests.tasks_helpers import Account, insert_task, make_account

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "15"))
BASE_URL = "http://lambda.local"
# Not `negative_data_rejection`: it counts unknown query parameters as invalid (HTTP APIs,
# this one included, ignore them) and cannot know that the test supplies the token that
# its negative cases leave out.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]

schema = schemathesis.openapi.from_path(ROOT / "functions" / "health" / "openapi.json")


# Requests sent per operation and backend, for the summary at the end.
GENERATED: Counter[str] = Counter()


# Sessions of the fuzzed user besides the one its token belongs to, all newer: the link
# from the session list to revoking its first (newest) entry ends these, not the token's.
EXTRA_SESSIONS = 20


@pytest.fixture
def account(db: Database) -> Account:
    """A signed-up user with three tasks and a password (for the routes that check it),
    whose token every authenticated case carries."""
    owner = make_account(f"fuzz-{uuid.uuid4().hex[:8]}@example.com")
    for title in ("alpha", "beta", "gamma"):
        insert_task(owner, title)
    with Session(get_engine()) as session:
        session.exec(
            sa.update(User)
            .where(col(User.id) == owner.user_id)
            .values(hashed_password=hash_password(PASSWORD))
        )
        now = utcnow()
        session.add_all(
            AuthSession(
                user_id=owner.user_id,
                refresh_jti=uuid.uuid4().hex,
                created_at=now + timedelta(seconds=number),
                expires_at=now + timedelta(days=7),
            )
            for number in range(1, EXTRA_SESSIONS + 1)
        )
        session.commit()
    return owner


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_generated_requests_get_documented_answers(
    case: Any, account: Account, db: Database
) -> None:
    session, adapter = lambda_session()
    headers: dict[str, str] = {}
    if case.operation.definition.raw.get("security"):
        token = account.token
        if case.operation.path == "/api/auth/logout":
            # Logging out ends the session; each logout gets a session of its own.
            token = make_account(f"out-{uuid.uuid4().hex[:8]}@example.com").token
        headers["Authorization"] = f"Bearer {token}"
    response = case.call(base_url=BASE_URL, session=session, headers=headers)
    case.validate_response(response, checks=CHECKS)
    GENERATED[f"{db.backend} {case.operation.label}"] += adapter.calls


# ---------------------------------------------------------------------------------------
# Stateful: sequences that follow the links between operations (a created task's id goes
# on to get, update, complete and delete; a listed session's id to revoking it), so that
# generated requests reach live tasks and sessions.

StatefulBase: Any = schema.as_state_machine()
STATEFUL_STEPS: Counter[str] = Counter()


def test_stateful_sequences_get_documented_answers(account: Account, db: Database) -> None:
    session, adapter = lambda_session()
    headers = {"Authorization": f"Bearer {account.token}"}

    class Workflow(StatefulBase):  # type: ignore[misc]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            call_headers = dict(headers)
            if case.operation.path == "/api/auth/logout":
                token = make_account(f"out-{uuid.uuid4().hex[:8]}@example.com").token
                call_headers["Authorization"] = f"Bearer {token}"
            return {"base_url": BASE_URL, "session": session, "headers": call_headers}

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            STATEFUL_STEPS[f"{db.backend} {case.operation.label} {response.status_code}"] += 1
            case.validate_response(response, checks=CHECKS)

    Workflow.run(
        settings=settings(
            max_examples=max(5, EXAMPLES // 2),
            stateful_step_count=8,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
    )
    GENERATED[f"{db.backend} stateful sequences"] += adapter.calls


def test_summary(capsys: pytest.CaptureFixture[str]) -> None:
    """Print how many requests the run generated (docs/RELIABILITY.md quotes it)."""
    with capsys.disabled():
        print(f"\nfuzz: {GENERATED.total()} generated requests, 0 with a 5xx or off-schema answer")
        for label, count in sorted(GENERATED.items()):
            print(f"  {count:5d}  {label}")
        if EXAMPLES > 15:  # the long run (`make fuzz`) also shows where sequences went
            print("stateful steps by operation and status:")
            for label, count in sorted(STATEFUL_STEPS.items()):
                print(f"  {count:5d}  {label}")
