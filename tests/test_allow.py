"""405 answers list, in `Allow`, every method their path serves (RFC 9110), not only the
methods of the first route that matched the path."""

import pytest

from tests.support.client import Client
from tests.support.database import Database

CASES = [
    ("tasks", "OPTIONS", "/api/tasks", "GET, POST"),
    ("tasks", "PUT", "/api/tasks", "GET, POST"),
    ("tasks", "POST", "/api/tasks/1", "DELETE, GET, PUT"),
    ("tasks", "GET", "/api/tasks/1/complete", "PATCH"),
    # The trash, the changes feed and the batch are no tasks: `/api/tasks/{task_id}`'s
    # methods are not theirs.
    ("tasks", "PUT", "/api/tasks/trash", "DELETE, GET"),
    ("tasks", "PATCH", "/api/tasks/trash", "DELETE, GET"),
    ("tasks", "DELETE", "/api/tasks/changes", "GET"),
    ("tasks", "GET", "/api/tasks/batch", "POST"),
    ("tasks", "GET", "/api/tasks/trash/1", "DELETE"),
    ("auth", "GET", "/api/auth/signup", "POST"),
    ("auth", "PUT", "/api/auth/me", "DELETE, GET, PATCH"),
    ("health", "POST", "/health", "GET"),
]


@pytest.mark.parametrize(("domain", "method", "path", "allow"), CASES)
def test_a_405_lists_every_method_of_the_path(
    domain: str, method: str, path: str, allow: str, db: Database
) -> None:
    response = Client(domain).request(method, path)
    assert response.status == 405
    assert response.json() == {"detail": "Method Not Allowed"}
    assert response.headers["allow"] == allow


def test_an_unknown_path_is_still_404(db: Database) -> None:
    response = Client("tasks").request("PUT", "/api/tasks/1/nothing")
    assert response.status == 404
    assert "allow" not in response.headers
