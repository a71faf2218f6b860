"""SnapStart: the runtime hooks each API function registers, called in-process as the Lambda
runtime calls them (before the snapshot in reverse order of registration, after a restore
in order), and the template's `EnableSnapStart` parameter, transformed on and off."""

import gc
import itertools
import json
import random
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
import snapshot_restore_py
from moto import mock_aws
from sqlalchemy import event
from sqlalchemy.pool import Pool

from taskapi.settings import get_jwt_keys
from taskapi.tokens import issue_token_pair
from tests.support.client import Client
from tests.support.database import Database
from tests.support.environment import configure
from tests.support.functions import load_module
from tests.support.tasks import make_account
from tests.support.template import (
    DATABASE_SECRET,
    HTTP_FUNCTIONS,
    api_routes,
    resources_of_type,
    sam_template,
    transformed,
)

_loads = itertools.count()
Hook = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class Hooks:
    """The hooks that loading one function registered."""

    def __init__(self, domain: str) -> None:
        before, after = (
            snapshot_restore_py.get_before_snapshot(),
            snapshot_restore_py.get_after_restore(),
        )
        known_before, known_after = len(before), len(after)
        self.domain = domain
        # A fresh import each time: the warm-up and the flags it uses up belong to one app.
        self.module = load_module(f"functions/{domain}/app.py", f"{domain}_app_{next(_loads)}")
        self.before: list[Hook] = before[known_before:]
        self.after: list[Hook] = after[known_after:]
        assert self.before
        assert self.after

    def client(self) -> Client:
        """A client of this import's handler."""
        client = Client(self.domain)
        client.handler = self.module.handler
        return client

    def snapshot(self) -> None:
        for function, args, kwargs in reversed(self.before):
            function(*args, **kwargs)

    def restore(self) -> None:
        for function, args, kwargs in self.after:
            function(*args, **kwargs)


@pytest.fixture(autouse=True)
def _unfreeze() -> Iterator[None]:
    # The before-snapshot hook freezes the garbage collector's objects, as it should in
    # a Lambda environment; in the test process, hand them back.
    yield
    gc.unfreeze()


@pytest.fixture
def pool_events() -> Iterator[dict[str, list[Any]]]:
    """The DBAPI connections every pool opens and hands out while the test runs."""
    seen: dict[str, list[Any]] = {"connect": [], "checkout": []}

    def connected(dbapi_connection: Any, _record: Any) -> None:
        seen["connect"].append(dbapi_connection)

    def checked_out(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        seen["checkout"].append(dbapi_connection)

    event.listen(Pool, "connect", connected)
    event.listen(Pool, "checkout", checked_out)
    yield seen
    event.remove(Pool, "connect", connected)
    event.remove(Pool, "checkout", checked_out)


def is_closed(dbapi_connection: Any) -> bool:
    if isinstance(dbapi_connection, sqlite3.Connection):
        try:
            dbapi_connection.execute("SELECT 1")
        except sqlite3.ProgrammingError:
            return True
        return False
    return bool(dbapi_connection.closed)


def request_lines(output: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("message") == "request"]


# ---------------------------------------------------------------------------------------
# The hooks


@pytest.mark.parametrize("domain", HTTP_FUNCTIONS.values())
def test_before_the_snapshot_nothing_touches_the_database(
    db: Database, pool_events: dict[str, list[Any]], domain: str
) -> None:
    hooks = Hooks(domain)
    hooks.snapshot()
    assert pool_events["connect"] == []
    assert pool_events["checkout"] == []


def test_the_warm_up_runs_the_whole_path_and_is_logged_as_such(
    db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    hooks = Hooks("tasks")
    capsys.readouterr()
    hooks.snapshot()
    (line,) = request_lines(capsys.readouterr().out)
    # Refused by authentication, before the route would open a transaction.
    assert (line["method"], line["path"], line["status"]) == ("POST", "/api/tasks", 401)
    assert line["snapstart_warm_up"] is True


def test_no_connection_from_before_the_snapshot_is_used_after_restore(
    db: Database, pool_events: dict[str, list[Any]]
) -> None:
    hooks = Hooks("tasks")
    client = hooks.client()
    account = make_account("snap@example.com")
    hooks.snapshot()
    # A connection the pool still holds when the snapshot is taken (init code that
    # queried, say): on Lambda it would be a socket to nowhere after a restore.
    assert client.get("/api/tasks", token=account.token).status == 200
    (before,) = set(pool_events["checkout"])
    hooks.restore()
    pool_events["checkout"].clear()
    response = client.get("/api/tasks", token=account.token)
    assert response.status == 200
    assert response.json()["total"] == 0
    after = set(pool_events["checkout"])
    assert after
    assert before not in after
    assert is_closed(before)


def test_each_restore_of_one_snapshot_draws_its_own_random_numbers(db: Database) -> None:
    hooks = Hooks("tasks")
    hooks.snapshot()
    snapshot = random.getstate()
    # Without the hook two environments restored from one snapshot draw the same numbers.
    assert random.random() == (random.setstate(snapshot), random.random())[1]
    draws = []
    for _ in range(2):
        random.setstate(snapshot)
        hooks.restore()
        draws.append([random.random() for _ in range(3)])
    assert draws[0] != draws[1]


def test_the_first_request_after_a_restore_is_logged_as_the_cold_start(
    db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    hooks = Hooks("tasks")
    client = hooks.client()
    account = make_account("cold@example.com")
    hooks.snapshot()
    hooks.restore()
    capsys.readouterr()
    for _ in range(2):
        assert client.get("/api/tasks", token=account.token).status == 200
    first, second = request_lines(capsys.readouterr().out)
    assert (first["cold_start"], second["cold_start"]) == (True, False)


@pytest.fixture
def jwt_secret(monkeypatch: pytest.MonkeyPatch, db: Database) -> Iterator[tuple[Any, str]]:
    with mock_aws():
        client = boto3.client("secretsmanager", region_name="us-east-1")
        arn = client.create_secret(Name="jwt", SecretString="key-before-the-snapshot-" + "x" * 20)[
            "ARN"
        ]
        monkeypatch.delenv("JWT_SECRET_KEY")
        configure(monkeypatch, jwt_secret_arn=arn)
        yield client, arn


def test_a_secret_rotated_while_the_snapshot_was_cached_is_read_again_after_restore(
    jwt_secret: tuple[Any, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, arn = jwt_secret
    hooks = Hooks("tasks")
    account = make_account("rotated@example.com")
    hooks.snapshot()
    assert get_jwt_keys().current.key.startswith("key-before-the-snapshot")
    old_token = account.token
    client.put_secret_value(SecretId=arn, SecretString="key-after-the-rotation-" + "y" * 20)
    hooks.restore()
    assert get_jwt_keys().current.key.startswith("key-after-the-rotation")
    api = hooks.client()
    assert api.get("/api/tasks", token=old_token).status == 401
    pair = issue_token_pair(user_id=account.user_id, session_id=account.session_id)
    assert api.get("/api/tasks", token=pair.access.token).status == 200


def test_the_auth_function_makes_the_dummy_hash_before_the_snapshot(
    db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    from taskapi import passwords

    hooks = Hooks("auth")
    hooks.snapshot()
    # The dummy hash of unknown accounts exists (made while the function loads, so in the
    # snapshot's memory): no first login pays for it.
    assert passwords._dummy_hash.cache_info().currsize == 1
    lines = request_lines(capsys.readouterr().out)
    assert [(line["path"], line["status"]) for line in lines] == [("/api/auth/login", 422)]
    # A restored environment keeps it: it depends on BCRYPT_ROUNDS alone.
    hooks.restore()
    assert passwords._dummy_hash.cache_info().currsize == 1


# ---------------------------------------------------------------------------------------
# The template


def _resolve(value: Any, parameters: dict[str, str], conditions: dict[str, Any]) -> Any:
    """CloudFormation's Ref (to parameters), Fn::Equals and Fn::If, for the test alone."""
    if isinstance(value, dict) and len(value) == 1:
        ((name, argument),) = value.items()
        if name == "Ref" and argument in parameters:
            return parameters[argument]
        if name == "Fn::Equals":
            left, right = (_resolve(part, parameters, conditions) for part in argument)
            return left == right
        if name == "Fn::If":
            condition, when_true, when_false = argument
            chosen = _resolve(conditions[condition], parameters, conditions)
            return _resolve(when_true if chosen else when_false, parameters, conditions)
    return value


@pytest.mark.parametrize(
    ("given", "apply_on"), [(None, "None"), ("false", "None"), ("true", "PublishedVersions")]
)
def test_enable_snapstart_turns_it_on_for_the_api_functions_alone(
    given: str | None, apply_on: str
) -> None:
    template = sam_template()
    parameters = {"DatabaseSecretArn": DATABASE_SECRET}
    if given is not None:
        parameters["EnableSnapStart"] = given
    cfn = transformed(parameters, template)
    values = {"EnableSnapStart": given or template["Parameters"]["EnableSnapStart"]["Default"]}
    functions = resources_of_type(cfn, "AWS::Lambda::Function")
    for name in HTTP_FUNCTIONS:
        snap_start = functions[name]["Properties"]["SnapStart"]
        assert _resolve(snap_start["ApplyOn"], values, cfn["Conditions"]) == apply_on
    # Migrations run once per deploy: nothing to gain from a snapshot.
    assert "SnapStart" not in functions["MigrateFunction"]["Properties"]


def test_the_api_and_the_schedule_invoke_the_alias_of_a_published_version() -> None:
    cfn = transformed({"DatabaseSecretArn": DATABASE_SECRET, "EnableSnapStart": "true"})
    aliases = resources_of_type(cfn, "AWS::Lambda::Alias")
    versions = resources_of_type(cfn, "AWS::Lambda::Version")
    for name in HTTP_FUNCTIONS:
        alias = aliases[f"{name}Aliaslive"]["Properties"]
        assert alias["FunctionName"] == {"Ref": name}
        (version,) = [
            v for v in versions if versions[v]["Properties"]["FunctionName"] == {"Ref": name}
        ]
        assert alias["FunctionVersion"] == {"Fn::GetAtt": [version, "Version"]}
    # SnapStart applies to published versions only: every route goes to an alias.
    assert set(api_routes(cfn).values()) == set(HTTP_FUNCTIONS)
    permissions = resources_of_type(cfn, "AWS::Lambda::Permission").values()
    # (The maintenance and reminders schedules invoke them directly: no SnapStart there.)
    assert {p["Properties"]["FunctionName"]["Ref"] for p in permissions} == {
        f"{name}Aliaslive" for name in HTTP_FUNCTIONS
    } | {"MaintenanceFunction", "RemindersFunction"}
    (rule,) = [
        rule
        for rule in resources_of_type(cfn, "AWS::Events::Rule").values()
        if rule["Properties"]["ScheduleExpression"] == {"Ref": "HealthCheckSchedule"}
    ]
    assert [t["Arn"] for t in rule["Properties"]["Targets"]] == [{"Ref": "HealthFunctionAliaslive"}]
