"""Generated requests (schemathesis) from the committed OpenAPI document, answered by the real
handlers, with every check schemathesis has: no 5xx, every response matches the documented
statuses, headers and bodies, valid data is accepted and invalid data refused, a 405 lists
the path's methods in `Allow`, and an operation that needs a token refuses a request without.

Each operation gets FUZZ_EXAMPLES generated cases (default 15, fixed seed, so a run is
repeatable) on SQLite and on PostgreSQL; `make fuzz` raises the count. Authenticated
operations carry a valid access token of a signed-up user who owns a few tasks, so the
generated ids also hit real tasks, not only 404s. Stateful sequences (half as many, up to 8
steps each) follow the document's links, each from an emptied database.
"""

import json
import os
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import schemathesis
import sqlalchemy as sa
from hypothesis import HealthCheck, assume, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.core.result import Ok
from schemathesis.transport import requests as schemathesis_requests
from sqlmodel import Session, col

from taskapi.db import get_engine
from taskapi.models import AuthSession, User, utcnow
from taskapi.passwords import hash_password
from taskapi.rules import PASSWORD_MAX_BYTES, common_passwords
from tests.support import fuzz_summary
from tests.support.auth import PASSWORD
from tests.support.database import Database
from tests.support.functions import ROOT
from tests.support.lambda_transport import LambdaAdapter, lambda_session
from tests.support.tasks import Account, insert_task, make_account

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "15"))
BASE_URL = "http://lambda.local"

# Positive and negative data, and every check schemathesis has (`validate_response` with
# no list runs them all: the document's statuses, headers and bodies, valid data accepted,
# invalid data refused, auth ignored, unsupported methods, ...). One expectation is widened:
# valid data may also get 412, an If-Match that is a well-formed string but names another
# version of the task (which no schema can know).
CONFIG = SchemathesisConfig.from_dict(
    {
        "generation": {"mode": "all"},
        "checks": {
            "positive_data_acceptance": {
                "expected-statuses": ["2xx", "401", "403", "404", "409", "412", "429"],
            },
        },
    }
)
DOCUMENT = ROOT / "functions" / "health" / "openapi.json"
schema = schemathesis.openapi.from_path(DOCUMENT, config=CONFIG)


@pytest.fixture(autouse=True)
def probes_reach_the_handlers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Checks that send requests of their own (without the test's session and token, as
    `ignored_auth` does) send them to the handlers too."""

    class ToHandlers(schemathesis_requests.SameHostRedirectsSession):
        def __init__(self) -> None:
            super().__init__()
            self.mount(BASE_URL, LambdaAdapter())

    monkeypatch.setattr(schemathesis_requests, "SameHostRedirectsSession", ToHandlers)


def unsettable_password(case: Any) -> bool:
    """A valid case with a password the server refuses for a rule JSON Schema cannot state,
    though the document's description does: over 72 bytes in UTF-8 (JSON Schema counts
    characters, not bytes: its `maxLength` 72 is the character bound), or one of the
    common passwords (which generated text such as "00000000" often is)."""
    meta, body = case.meta, case.body
    if meta is None or not meta.generation.mode.is_positive or not isinstance(body, dict):
        return False
    return any(
        "password" in name
        and isinstance(value, str)
        and (len(value.encode()) > PASSWORD_MAX_BYTES or value.lower() in common_passwords())
        for name, value in body.items()
    )


def beyond_the_schema(case: Any) -> bool:
    """A valid case that the document can only describe in words: a changes-feed `cursor`
    (opaque: only the ones the server handed out are known, the others 422), or a batch
    operation with the fields of another kind of operation (`id` only for update,
    complete and delete; `body` only for create and update; 422)."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return False
    if case.operation.path == "/api/tasks/changes":
        return "cursor" in (case.query or {})
    if case.operation.path == "/api/tasks/batch" and isinstance(case.body, dict):
        for operation in case.body.get("operations") or []:
            op, has_id, has_body = operation.get("op"), "id" in operation, "body" in operation
            has_id = has_id and operation["id"] is not None
            has_body = has_body and operation["body"] is not None
            creates = op == "create"
            if has_id == creates or has_body != (op in ("create", "update")):
                return True
            if creates and operation.get("if_match") is not None:
                return True
    return False


def drops_authorization(case: Any) -> bool:
    """A negative case made by leaving out the token: the test must not add it back."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_negative:
        return False
    data = meta.phase.data
    names = {getattr(data, "parameter", None)}
    names.update(mutation.parameter for mutation in getattr(data, "mutations", ()))
    return "Authorization" in names


# Sessions of the fuzzed user besides the one its token belongs to, all newer: the link
# from the session list to revoking its first (newest) entry ends these, not the token's.
EXTRA_SESSIONS = 20


def own_idempotency_key(case: Any) -> None:
    """Give a generated `Idempotency-Key` a suffix of its own. Generated keys repeat across
    cases ("0", "00", ...), and the same key with another body is 422 by design: a valid
    case would be rejected for what an earlier case sent."""
    key = (case.headers or {}).get("Idempotency-Key")
    # Keys of a valid length (1 to 255) stay valid: the unique part is appended, or for a
    # long key takes the place of its last 32 characters. Others are left as generated.
    if isinstance(key, str) and 0 < len(key) <= 255:
        kept = key if len(key) <= 255 - 32 else key[: len(key) - 32]
        case.headers["Idempotency-Key"] = kept + uuid.uuid4().hex


def fuzzed_account() -> Account:
    """A signed-up user with three tasks, one in the trash, a password (for the routes that
    check it) and sessions besides its token's."""
    owner = make_account(f"fuzz-{uuid.uuid4().hex[:8]}@example.com")
    for title in ("alpha", "beta", "gamma"):
        insert_task(owner, title)
    # One in the trash, so that generated restores can find it.
    insert_task(owner, "trashed", deleted_at=utcnow())
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


@pytest.fixture
def account(db: Database) -> Account:
    """The user whose token every authenticated case carries."""
    return fuzzed_account()


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_generated_requests_get_documented_answers(
    case: Any, account: Account, db: Database, record_property: Callable[[str, object], None]
) -> None:
    assume(not unsettable_password(case))
    assume(not beyond_the_schema(case))
    session, adapter = lambda_session()
    headers: dict[str, str] = {}
    if case.operation.definition.raw.get("security") and not drops_authorization(case):
        token = account.token
        if case.operation.path == "/api/auth/logout":
            # Logging out ends the session; each logout gets a session of its own.
            token = make_account(f"out-{uuid.uuid4().hex[:8]}@example.com").token
        headers["Authorization"] = f"Bearer {token}"
    own_idempotency_key(case)
    response = case.call(base_url=BASE_URL, session=session, headers=headers)
    case.validate_response(
        response,
        headers=headers,
        transport_kwargs={"base_url": BASE_URL, "session": session, "headers": headers},
    )
    assert adapter.calls >= 1, "the case never reached a handler"
    record_property(fuzz_summary.PROPERTY, adapter.calls)


# ---------------------------------------------------------------------------------------
# Stateful: sequences that follow the links between operations (a created task's id goes
# on to get, update, complete and delete; a listed session's id to revoking it), so that
# generated requests reach live tasks and sessions.

StatefulBase: Any = schema.as_state_machine()


def start_over(db: Database) -> None:
    """Empty tables, and task ids counted from 1 again (SQLite reuses them by itself)."""
    db.truncate()
    if db.backend == "postgresql":
        with db.engine.begin() as connection:
            connection.execute(
                sa.text("SELECT setval(pg_get_serial_sequence('task', 'id'), 1, false)")
            )


def test_stateful_sequences_get_documented_answers(
    db: Database, record_property: Callable[[str, object], None]
) -> None:
    session, adapter = lambda_session()

    class Workflow(StatefulBase):  # type: ignore[misc]
        headers: dict[str, str]

        def setup(self) -> None:
            # Hypothesis replays and extends earlier sequences and expects the same answers
            # (which rules are enabled follows from them). What one sequence leaves behind
            # (revoked sessions, a signed-up email, tasks that a generated id now hits)
            # would change them, so each one starts from the same database and account.
            start_over(db)
            self.headers = {"Authorization": f"Bearer {fuzzed_account().token}"}

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            own_idempotency_key(case)
            # A negative step made by leaving out the token is sent without it.
            call_headers = {} if drops_authorization(case) else dict(self.headers)
            if call_headers and case.operation.path == "/api/auth/logout":
                token = make_account(f"out-{uuid.uuid4().hex[:8]}@example.com").token
                call_headers["Authorization"] = f"Bearer {token}"
            return {"base_url": BASE_URL, "session": session, "headers": call_headers}

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            if beyond_the_schema(case):
                # Valid by the document, refused by rules it states in words (an unknown
                # cursor, a batch operation with another kind's fields): not a finding.
                return
            case.validate_response(
                response,
                headers={} if drops_authorization(case) else self.headers,
                transport_kwargs={
                    "base_url": BASE_URL,
                    "session": session,
                    "headers": self.headers,
                },
                # The scenario so far, for the checks that look back (a read of what an
                # earlier step deleted, a 404 for what one created).
                recorder=self.recorder,
            )

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
    assert adapter.calls >= 1, "no sequence reached a handler"
    record_property(fuzz_summary.PROPERTY, adapter.calls)


def test_every_documented_operation_is_fuzzed() -> None:
    """Each operation of the document is one that the generated tests call: none is
    left out by a filter, or by a definition that schemathesis cannot read (an error
    instead of an operation, which it would skip)."""
    document = json.loads(DOCUMENT.read_text())
    documented = {
        f"{method.upper()} {path}"
        for path, item in document["paths"].items()
        for method in item
        if method in {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
    }
    fuzzed = {
        result.ok().label if isinstance(result, Ok) else f"unreadable: {result}"
        for result in schema.get_all_operations()
    }
    assert fuzzed == documented
    assert {"POST /api/auth/signup", "GET /api/tasks", "GET /health"} <= documented
