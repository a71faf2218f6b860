"""Named stages and custom-domain base paths: which prefix the functions strip, and the
whole API through the local server at a named stage (`python -m localapi --stage dev`).

tests/test_events.py replays every event through every function at each address."""

from collections.abc import Iterator

import httpx
import pytest

from taskapi.factory import path_prefix
from taskapi.settings import Settings
from tests.support.auth import PASSWORD
from tests.support.database import Database
from tests.support.functions import ROOT
from tests.support.local_server import local_server, server_environment


@pytest.mark.parametrize(
    ("path", "stage", "base_path", "prefix"),
    [
        # The execute-api URL of a named stage: the stage leads the path.
        ("/dev/api/tasks", "dev", "", "/dev"),
        ("/dev", "dev", "", "/dev"),
        # The $default stage, or a custom domain whose mapping names the stage: no prefix.
        ("/api/tasks", "$default", "", ""),
        ("/api/tasks", "dev", "", ""),
        # Whole segments only.
        ("/devices/api", "dev", "", ""),
        ("/v1x/api/tasks", "$default", "/v1", ""),
        # A custom domain's base path, whichever stage its mapping names.
        ("/v1/api/tasks", "$default", "/v1", "/v1"),
        ("/v1/api/tasks", "prod", "/v1", "/v1"),
        ("/v1/health", None, "/v1", "/v1"),
    ],
)
def test_the_prefix_in_front_of_the_routes(
    path: str, stage: str | None, base_path: str, prefix: str
) -> None:
    assert path_prefix(path, stage=stage, base_path=base_path) == prefix


@pytest.mark.parametrize(
    ("value", "normalised"),
    [("", ""), ("/", ""), ("v1", "/v1"), ("/v1", "/v1"), ("/v1/", "/v1"), ("/a/b/", "/a/b")],
)
def test_api_base_path_is_written_any_way(value: str, normalised: str) -> None:
    assert Settings(api_base_path=value).api_base_path == normalised


@pytest.fixture(scope="module")
def staged(
    migrated_database: Database, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    """The real template served at a named stage, on this backend's migrated database."""
    migrated_database.truncate()
    folder = tmp_path_factory.mktemp("staged")
    template = folder / "template.yaml"
    template.symlink_to(ROOT / "template.yaml")
    with local_server(
        template.resolve(),
        env=server_environment(migrated_database),
        cwd=folder,
        options=("--stage", "dev"),
    ) as (client, _):
        yield client


def test_the_local_server_serves_every_function_at_a_named_stage(staged: httpx.Client) -> None:
    assert staged.get("/dev/health").json()["status"] == "ok"
    assert staged.get("/dev/health/db").status_code == 200
    # API Gateway's own 404 outside the stage: no function is called.
    outside = staged.get("/health")
    assert (outside.status_code, outside.json()) == (404, {"message": "Not Found"})

    signup = staged.post(
        "/dev/api/auth/signup",
        json={"email": "staged@example.com", "name": "Staged", "password": PASSWORD},
    )
    assert signup.status_code == 201, signup.text
    auth = {"authorization": f"Bearer {signup.json()['access_token']}"}
    assert staged.get("/dev/api/auth/me", headers=auth).json()["email"] == "staged@example.com"

    created = staged.post("/dev/api/tasks", json={"title": "At a stage"}, headers=auth)
    assert created.status_code == 201, created.text
    # The new task's address works as it is: it keeps the stage.
    location = created.headers["location"]
    assert location == f"/dev/api/tasks/{created.json()['id']}"
    assert staged.get(location, headers=auth).json()["title"] == "At a stage"
    listed = staged.get("/dev/api/tasks", headers=auth).json()
    assert [task["title"] for task in listed["items"]] == ["At a stage"]

    docs = staged.get("/dev/docs")
    assert docs.status_code == 200
    assert "'openapi.json'" in docs.text or '"openapi.json"' in docs.text
    document = staged.get("/dev/openapi.json").json()
    assert document["servers"] == [{"url": "/dev"}]
