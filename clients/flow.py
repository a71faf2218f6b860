"""A client developer's flow through the API with the client that openapi-python-client
generates from the document (default settings): `mypy --strict` checks it against the
document, and running it against the local server checks the document against the API.

Usage: python clients/flow.py http://127.0.0.1:PORT (with clients/generated on the path).
"""

import json
import os
import re
import sys
import time
import uuid
from http import HTTPStatus
from typing import TypeVar

from task_api_client import AuthenticatedClient, Client
from task_api_client.api.auth import (
    confirm_email_change,
    confirm_password_reset,
    get_me,
    list_security_events,
    list_sessions,
    login,
    logout,
    refresh,
    request_email_change,
    request_password_reset,
    signup,
    update_me,
)
from task_api_client.api.tasks import (
    complete_task,
    create_task,
    delete_task,
    empty_the_trash,
    get_task,
    list_changes,
    list_tasks,
    run_batch,
    update_task,
)
from task_api_client.models import (
    AuthResponse,
    BatchOp,
    BatchOperation,
    BatchOperationBody,
    BatchRequest,
    BatchResponse,
    Detail,
    EmailChangeConfirm,
    EmailChangeRequest,
    LoginRequest,
    PasswordResetConfirm,
    PasswordResetRequest,
    ProfileUpdate,
    RefreshRequest,
    SecurityEventPage,
    SessionList,
    SignupRequest,
    TaskChanges,
    TaskCreate,
    TaskPage,
    TaskPriority,
    TaskPublic,
    TaskSort,
    TaskStatus,
    TaskUpdate,
    TokenResponse,
    UserPublic,
)
from task_api_client.types import Response

T = TypeVar("T")
R = TypeVar("R")
PASSWORD = "correct horse battery"  # noqa: S105 (a test account on a throwaway database)
NEW_PASSWORD = "a new password, longer"  # noqa: S105
TOKEN = re.compile(r"\?token=([A-Za-z0-9_-]+)")


def mailed_token(address: str) -> str:
    """The token of the last mail to `address`, from the local server's log (SERVER_LOG),
    where it writes mails when no mail server is configured."""
    for _ in range(50):
        with open(os.environ["SERVER_LOG"], encoding="utf-8", errors="replace") as log:
            messages = [
                json.loads(line)["message"]
                for line in log
                if line.startswith("{") and '"email_delivery"' in line
            ]
        for message in reversed(messages):
            match = TOKEN.search(message)
            if match and f"To: {address}\n" in message:
                return match.group(1)
        time.sleep(0.1)
    raise SystemExit(f"no mail to {address} in the server log")


def expect(step: str, response: Response[R], status: int) -> None:
    if response.status_code != status:
        raise SystemExit(f"{step}: status {response.status_code}, expected {status}")
    print(f"py  {step}: {int(response.status_code)}")


def body(step: str, response: Response[R], kind: type[T]) -> T:
    parsed = response.parsed
    if not isinstance(parsed, kind):
        raise SystemExit(f"{step}: body {parsed!r}, expected {kind.__name__}")
    return parsed


def main(base_url: str) -> None:
    public = Client(base_url=base_url, raise_on_unexpected_status=True)
    email = f"py-{int(time.time())}-{uuid.uuid4().hex[:6]}@example.com"

    signed_up = signup.sync_detailed(
        client=public, body=SignupRequest(email=email, name="Python", password=PASSWORD)
    )
    expect("signup", signed_up, HTTPStatus.CREATED)

    logged_in = login.sync_detailed(
        client=public, body=LoginRequest(email=email, password=PASSWORD)
    )
    expect("login", logged_in, HTTPStatus.OK)
    tokens = body("login", logged_in, AuthResponse)
    # Every response field is required: no `Unset` to rule out before using them.
    if tokens.user.last_login_at is None or not tokens.user.is_active:
        raise SystemExit("login: the user's last_login_at is not set")
    client = AuthenticatedClient(base_url=base_url, token=tokens.access_token)

    created = create_task.sync_detailed(
        client=client, body=TaskCreate(title="Write the client", priority=TaskPriority.HIGH)
    )
    expect("create", created, HTTPStatus.CREATED)
    task = body("create", created, TaskPublic)
    if task.status.value != "Pending" or task.priority is not TaskPriority.HIGH:
        raise SystemExit(f"create: unexpected task {task!r}")
    if task.description is not None:
        raise SystemExit(f"create: unexpected description {task.description!r}")

    listed = list_tasks.sync_detailed(
        client=client,
        status=[TaskStatus.PENDING, TaskStatus.IN_PROGRESS],
        priority=[TaskPriority.HIGH],
        q="client",
        sort=TaskSort.CREATED_AT_DESC,
        limit=5,
    )
    expect("list", listed, HTTPStatus.OK)
    page = body("list", listed, TaskPage)
    if page.total != 1 or [item.id for item in page.items] != [task.id]:
        raise SystemExit(f"list: unexpected page {page!r}")

    got = get_task.sync_detailed(task.id, client=client)
    expect("get", got, HTTPStatus.OK)
    etag = got.headers["etag"]

    updated = update_task.sync_detailed(
        task.id,
        client=client,
        body=TaskUpdate(title="Write the typed client", status=TaskStatus.IN_PROGRESS),
        if_match=etag,
    )
    expect("update with If-Match", updated, HTTPStatus.OK)
    if body("update", updated, TaskPublic).title != "Write the typed client":
        raise SystemExit("update: title unchanged")
    stale = update_task.sync_detailed(
        task.id, client=client, body=TaskUpdate(title="Too late"), if_match=etag
    )
    expect("update with a stale If-Match", stale, HTTPStatus.PRECONDITION_FAILED)

    completed = complete_task.sync_detailed(task.id, client=client)
    expect("complete", completed, HTTPStatus.OK)
    done = body("complete", completed, TaskPublic)
    if done.status is not TaskStatus.COMPLETED or done.completed_at is None:
        raise SystemExit(f"complete: unexpected task {done!r}")

    expect("delete", delete_task.sync_detailed(task.id, client=client), HTTPStatus.NO_CONTENT)
    expect("get after delete", get_task.sync_detailed(task.id, client=client), HTTPStatus.NOT_FOUND)
    expect("empty the trash", empty_the_trash.sync_detailed(client=client), HTTPStatus.NO_CONTENT)

    operations = [
        BatchOperation(op=BatchOp.CREATE, body=BatchOperationBody.from_dict({"title": title}))
        for title in ("Buy milk", "")
    ]
    batched = run_batch.sync_detailed(
        client=client,
        body=BatchRequest(operations=operations),
        idempotency_key=f"py-batch-{uuid.uuid4().hex}",
    )
    expect("batch", batched, HTTPStatus.OK)
    results = body("batch", batched, BatchResponse).results
    if [result.status for result in results] != [201, 422] or not results[0].etag:
        raise SystemExit(f"batch: unexpected results {results!r}")

    feed = list_changes.sync_detailed(client=client, limit=100)
    expect("changes", feed, HTTPStatus.OK)
    changes = body("changes", feed, TaskChanges)
    # The removed task is among `deleted`, unless SQLite (the local server's database) gave
    # its id to the new task: the feed then lists that id once, as it is now.
    reported = task.id in changes.deleted or any(item.id == task.id for item in changes.items)
    if [item.title for item in changes.items] != ["Buy milk"] or not reported or changes.has_more:
        raise SystemExit(f"changes: unexpected page {changes!r}")
    since = list_changes.sync_detailed(client=client, cursor=changes.cursor)
    if body("changes since the cursor", since, TaskChanges).items:
        raise SystemExit("changes: the cursor did not move past the page")

    refreshed = refresh.sync_detailed(
        client=public, body=RefreshRequest(refresh_token=tokens.refresh_token)
    )
    expect("refresh", refreshed, HTTPStatus.OK)
    fresh = body("refresh", refreshed, TokenResponse)

    # Logout's body is optional: none is sent.
    fresh_client = AuthenticatedClient(base_url=base_url, token=fresh.access_token)
    expect("logout", logout.sync_detailed(client=fresh_client), HTTPStatus.OK)
    expect("me after logout", get_me.sync_detailed(client=fresh_client), HTTPStatus.UNAUTHORIZED)

    account(base_url, public, email)
    print("py  flow complete")


def account(base_url: str, public: Client, email: str) -> None:
    """The profile, sessions, an email change and a password reset by mail, the log."""
    logged_in = login.sync_detailed(
        client=public, body=LoginRequest(email=email, password=PASSWORD)
    )
    expect("login again", logged_in, HTTPStatus.OK)
    client = AuthenticatedClient(
        base_url=base_url, token=body("login", logged_in, AuthResponse).access_token
    )

    renamed = update_me.sync_detailed(client=client, body=ProfileUpdate(name="Python Client"))
    expect("update profile", renamed, HTTPStatus.OK)
    if body("update profile", renamed, UserPublic).name != "Python Client":
        raise SystemExit("update profile: name unchanged")

    listed = list_sessions.sync_detailed(client=client)
    expect("sessions", listed, HTTPStatus.OK)
    current = [item for item in body("sessions", listed, SessionList).items if item.current]
    if len(current) != 1 or current[0].ip is None or current[0].last_used_at is None:
        raise SystemExit(f"sessions: no device fields on the current one {current!r}")

    new_email = f"new-{email}"
    asked = request_email_change.sync_detailed(
        client=client, body=EmailChangeRequest(password=PASSWORD, new_email=new_email)
    )
    expect("request email change", asked, HTTPStatus.ACCEPTED)
    changed = confirm_email_change.sync_detailed(
        client=public, body=EmailChangeConfirm(token=mailed_token(new_email))
    )
    expect("confirm email change", changed, HTTPStatus.OK)
    if body("confirm email change", changed, UserPublic).email != new_email:
        raise SystemExit("confirm email change: email unchanged")

    reset = request_password_reset.sync_detailed(
        client=public, body=PasswordResetRequest(email=new_email)
    )
    expect("request password reset", reset, HTTPStatus.ACCEPTED)
    body("request password reset", reset, Detail)
    confirmed = confirm_password_reset.sync_detailed(
        client=public,
        body=PasswordResetConfirm(token=mailed_token(new_email), new_password=NEW_PASSWORD),
    )
    expect("confirm password reset", confirmed, HTTPStatus.OK)
    expect("me after the reset", get_me.sync_detailed(client=client), HTTPStatus.UNAUTHORIZED)

    again = login.sync_detailed(
        client=public, body=LoginRequest(email=new_email, password=NEW_PASSWORD)
    )
    expect("login with the new password", again, HTTPStatus.OK)
    client = AuthenticatedClient(
        base_url=base_url, token=body("login", again, AuthResponse).access_token
    )
    events = list_security_events.sync_detailed(client=client, limit=5)
    expect("security log", events, HTTPStatus.OK)
    types = [item.type_.value for item in body("security log", events, SecurityEventPage).items]
    if types[:3] != ["login", "password_reset", "password_reset_requested"]:
        raise SystemExit(f"security log: unexpected events {types}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python clients/flow.py BASE_URL")
    main(sys.argv[1])
