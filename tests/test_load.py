"""A smaller run of `make load` (tools/load.py): 1,000 requests from 32 concurrent clients
through the local server on PostgreSQL, with no errors, every created task read back by its
owner, and PostgreSQL's connections within what the pool settings promise."""

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from taskapi.db import get_engine
from tests.support.database import Database, postgres_admin_url
from tools.load import MAX_OVERFLOW, POOL_SIZE, run


@pytest.mark.perf
@pytest.mark.postgres_only
def test_a_thousand_concurrent_requests_lose_nothing(tmp_path: Path) -> None:
    admin_url = postgres_admin_url()
    assert admin_url is not None
    result = run(
        requests=1000,
        clients=32,
        admin_url=admin_url,
        time_limit=180,
        log_path=tmp_path / "server.log",
    )
    summary = result.summary()
    assert result.requests == 1000, summary
    assert result.errors == 0, summary
    assert result.created > 0, summary
    assert result.verified == result.created, summary
    # One process, one layer engine shared by the three functions: its pool is the bound.
    assert result.connection_bound == POOL_SIZE + MAX_OVERFLOW
    assert 0 < result.peak_connections <= result.connection_bound, summary


@pytest.mark.perf
@pytest.mark.postgres_only
def test_connections_killed_under_load_cost_no_answer_but_writes_in_flight(
    tmp_path: Path,
) -> None:
    """A shorter `make load-failover`: 16 clients for 5 s, every server process of the
    database ended every 1.2 s. Only writes in flight at a kill may fail; after one last
    kill with the load stopped, every client's next request succeeds; every acknowledged
    task is there."""
    admin_url = postgres_admin_url()
    assert admin_url is not None
    result = run(
        requests=0,
        clients=16,
        admin_url=admin_url,
        time_limit=60,
        log_path=tmp_path / "server.log",
        duration=5,
        kill_every=1.2,
    )
    summary = result.summary()
    assert result.kills >= 3, summary
    assert result.backends_killed >= result.kills, summary
    assert result.errors == 0, summary
    assert set(result.statuses) <= {"200", "201", "503"}, summary
    assert result.excused == result.statuses["503"], summary
    assert result.after_last_kill == {"200": 16}, summary
    assert result.created > 0, summary
    assert result.verified == result.created, summary


def test_threads_that_start_together_share_one_engine(db: Database) -> None:
    """The local server's first requests arrive on many threads at once; they must not each
    build an engine (and a pool) of their own, or the connection bound above means nothing."""
    barrier = threading.Barrier(16)

    def first_use() -> Engine:
        barrier.wait()
        return get_engine()

    with ThreadPoolExecutor(16) as pool:
        engines = list(pool.map(lambda _: first_use(), range(16)))
    assert len({id(engine) for engine in engines}) == 1
