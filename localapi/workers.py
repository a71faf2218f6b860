"""The server's runtime: each function in worker processes of its own, as Lambda runs it in
execution environments. A worker imports its function once (the cold start), then serves
one request at a time and keeps its warm state; it sees the developer's settings and its
own function's `Environment` alone. A handler past its function's Timeout has its worker
killed; the next request starts a new one. Up to `workers` processes per function serve
concurrent requests, so throughput scales with cores rather than sharing one GIL.
`python -m localapi invoke` runs its one invocation in such a worker too.
"""

import asyncio
import logging
import multiprocessing
import os
import traceback
from collections.abc import Mapping
from multiprocessing.connection import Connection
from typing import Any

from localapi.events import LambdaContext
from localapi.runtime import (
    LOCAL_DEFAULTS,
    FunctionInitError,
    InvocationTimeoutError,
    import_handler,
    timeout_message,
)
from localapi.template import Function, Template

logger = logging.getLogger("localapi")

# A fresh interpreter per worker: forking the server would copy its event loop and threads.
_SPAWN = multiprocessing.get_context("spawn")
# Lambda gives a function's init phase 10 seconds, apart from its Timeout; locally every
# function imports at once at start-up, on a developer's cores, so it gets longer.
INIT_TIMEOUT_SECONDS = 30.0


class WorkerError(RuntimeError):
    """The handler raised, or its worker died: the gateway answers 502."""


def function_environment(
    function: Function, settings: Mapping[str, str], *, pool_size: int = 1
) -> dict[str, str]:
    """A worker's whole environment: the developer's settings (shell, then `.env`), then the
    local defaults, then this function's own `Environment` from the template."""
    local = {**LOCAL_DEFAULTS, "DATABASE_POOL_SIZE": str(pool_size)}
    return {**function.environment, **local, **settings}


def _serve(
    connection: Connection, function: Function, environment: dict[str, str], logs_to_stderr: bool
) -> None:
    """A worker process's life: init, then one invocation at a time until the pipe closes."""
    from localapi.server import configure_server_logging  # the server's module imports this one

    if logs_to_stderr:
        # `invoke` prints the result alone on stdout, as `sam local invoke` does; the
        # function's JSON log lines, which its app factory writes to stdout, go to stderr.
        os.dup2(2, 1)
    os.environ.clear()
    os.environ.update(environment)
    configure_server_logging()
    try:
        handler = import_handler(function)
    except BaseException as error:  # SystemExit too: the server reports it, and stops
        if os.environ.get("LOCALAPI_DEBUG") == "1":
            traceback.print_exc()
        connection.send(("init_error", f"{type(error).__name__}: {error}"))
        return
    connection.send(("ready", os.getpid()))
    while True:
        try:
            event = connection.recv()
        except (EOFError, OSError):  # the server went away
            return
        context = LambdaContext(
            function_name=function.name,
            timeout_seconds=function.timeout,
            memory_limit_in_mb=function.memory,
        )
        try:
            result = handler(event, context)
            connection.send(("ok", result))
        except Exception as error:
            # The traceback is logged here, in the worker, as Lambda logs it.
            logger.exception("%s raised", function.name)
            connection.send(("error", f"{type(error).__name__}: {error}"))


class Worker:
    """One execution environment: a process, and the pipe to it."""

    def __init__(
        self, function: Function, environment: dict[str, str], *, logs_to_stderr: bool = False
    ) -> None:
        self.function = function
        self.connection, child = _SPAWN.Pipe()
        self.process = _SPAWN.Process(
            target=_serve,
            args=(child, function, environment, logs_to_stderr),
            name=f"localapi-{function.name}",
            daemon=True,  # never outlives the server
        )
        self.process.start()
        child.close()
        self.alive = True
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reply: asyncio.Future[tuple[Any, ...]] | None = None

    def wait_ready(self, timeout: float = INIT_TIMEOUT_SECONDS) -> None:
        """Block until the function is imported; FunctionInitError if it cannot be."""
        if not self.connection.poll(timeout):
            self.kill()
            raise FunctionInitError(self.function, TimeoutError(f"init past {timeout:g} s"))
        try:
            reply = self.connection.recv()
        except EOFError:
            self.kill()
            code = self.process.exitcode
            raise FunctionInitError(self.function, f"its process exited ({code})") from None
        self._check_ready(reply)

    async def ready(self) -> None:
        """Wait for the function's import in the server's loop (a cold start while serving)."""
        self._check_ready(await self._reply_within(self._expect(), INIT_TIMEOUT_SECONDS))

    def _check_ready(self, reply: tuple[Any, ...]) -> None:
        if reply[0] != "ready":
            self.kill()
            raise FunctionInitError(self.function, str(reply[1]))

    async def call(self, event: Any, timeout: float) -> tuple[Any, ...]:
        """The worker's reply to `event`; TimeoutError past `timeout` seconds."""
        reply = self._expect()
        # The Timeout counts from the handler's start, as on Lambda: not the time the event
        # (up to 10 MB) takes through the pipe.
        self.connection.send(event)
        return await self._reply_within(reply, timeout)

    def _expect(self) -> "asyncio.Future[tuple[Any, ...]]":
        loop = asyncio.get_running_loop()
        if self._loop is None:
            # Watched for as long as the worker lives, not once per request: two fewer
            # system calls per request, and a worker that dies while idle is seen at once.
            self._loop = loop
            loop.add_reader(self.connection.fileno(), self._readable)
        self._reply = loop.create_future()
        return self._reply

    async def _reply_within(
        self, reply: "asyncio.Future[tuple[Any, ...]]", timeout: float
    ) -> tuple[Any, ...]:
        # A timer on the future itself: asyncio.wait_for would wrap it in a task each time.
        timer = asyncio.get_running_loop().call_later(timeout, _expire, reply)
        try:
            return await reply
        finally:
            timer.cancel()
            self._reply = None

    def _readable(self) -> None:
        reply, self._reply = self._reply, None
        try:
            message = self.connection.recv()
        except (EOFError, OSError) as error:
            self.alive = False
            self._stop_watching()
            if reply is not None and not reply.done():
                reply.set_exception(WorkerError(f"{self.function.name}'s worker died: {error}"))
            return
        if reply is not None and not reply.done():
            reply.set_result(message)

    def _stop_watching(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self.connection.fileno())
        self._loop = None

    def kill(self) -> None:
        if not self.connection.closed:
            self._stop_watching()
        self.process.kill()
        self.process.join()
        self.connection.close()


def _expire(reply: "asyncio.Future[Any]") -> None:
    if not reply.done():
        reply.set_exception(TimeoutError())


class FunctionPool:
    """A function's workers: started on demand up to `size`, each serving one request.

    A request takes the first worker to be free: a warm one that finishes its request, or
    one that a cold start brings. The pool starts a worker when requests wait and every
    worker is busy, one at a time: a burst that found every worker busy otherwise had each
    of its requests wait for an import of its own, all of them at once on the same cores
    (a dozen seconds on 2 cores under load), while the warm workers sat idle.
    """

    def __init__(self, function: Function, environment: dict[str, str], size: int) -> None:
        self.function = function
        self.environment = environment
        self.size = size
        self.workers: set[Worker] = set()
        # Idle workers, and a failed cold start's error for the request it would have served.
        self._idle: asyncio.Queue[Worker | WorkerError] = asyncio.Queue()
        self._waiting = 0
        self._starting: asyncio.Task[None] | None = None
        # Why the function could not start after a save: its requests fail at once (502)
        # instead of each waiting for an import that fails again; the next save retries.
        self.broken: FunctionInitError | None = None

    def add(self, worker: Worker) -> None:
        """A worker started and imported elsewhere (at start-up), idle from now on."""
        self.workers.add(worker)
        self._idle.put_nowait(worker)

    async def invoke(self, event: Any) -> Any:
        if self.broken is not None:
            raise WorkerError(str(self.broken))
        worker = await self._checkout()
        try:
            reply = await worker.call(event, self.function.timeout)
        except TimeoutError:
            self._discard(worker)
            raise InvocationTimeoutError(timeout_message(self.function)) from None
        except (WorkerError, OSError) as error:
            self._discard(worker)
            raise WorkerError(str(error)) from error
        self._idle.put_nowait(worker)
        if reply[0] == "ok":
            return reply[1]
        raise WorkerError(reply[1])

    async def _checkout(self) -> Worker:
        self._waiting += 1
        try:
            while True:
                self._grow()
                item = await self._idle.get()
                if isinstance(item, WorkerError):
                    raise item
                if item.alive:
                    return item
                # Died while idle: replaced, as Lambda replaces a crashed environment.
                self._discard(item)
        finally:
            self._waiting -= 1

    def _grow(self) -> None:
        """Start a worker if requests wait for more workers than are idle, none is starting
        and the pool has room."""
        if (
            self._starting is None
            and len(self.workers) < self.size
            and self._waiting > self._idle.qsize()
        ):
            worker = Worker(self.function, self.environment)
            self.workers.add(worker)
            self._starting = asyncio.get_running_loop().create_task(self._cold_start(worker))

    async def _cold_start(self, worker: Worker) -> None:
        try:
            await worker.ready()
        except (FunctionInitError, TimeoutError, WorkerError) as error:
            self._discard(worker)
            if self._waiting:
                self._idle.put_nowait(WorkerError(str(error)))
            else:
                logger.error("%s", error)
        else:
            self._idle.put_nowait(worker)
        finally:
            self._starting = None
        self._grow()

    def _discard(self, worker: Worker) -> None:
        self.workers.discard(worker)
        worker.kill()
        if self._waiting:
            self._grow()

    def close(self) -> None:
        if self._starting is not None:
            self._starting.cancel()
        for worker in self.workers:
            worker.kill()
        self.workers.clear()
        while not self._idle.empty():
            self._idle.get_nowait()


class ProcessRuntime:
    """The template's functions, each in a pool of worker processes."""

    def __init__(self, template: Template, settings: Mapping[str, str], *, workers: int) -> None:
        self.template = template
        # A function without an HTTP route (the migrate function) is never called here.
        self.pools = {
            name: FunctionPool(function, function_environment(function, settings), workers)
            for name, function in template.functions.items()
            if function.routes
        }

    def warm_up(self, *, keep_serving: bool = False) -> None:
        """Start one worker per function, importing all at once, before any request is
        served: FunctionInitError for the first that fails; with `keep_serving`, every
        function that fails is marked broken instead and the others serve."""
        started = [Worker(pool.function, pool.environment) for pool in self.pools.values()]
        failed = []
        for pool, worker in zip(self.pools.values(), started, strict=True):
            try:
                worker.wait_ready()
            except FunctionInitError as error:
                pool.broken = error
                failed.append(error)
                continue
            pool.add(worker)
        if failed and not keep_serving:
            for worker in started:
                worker.kill()
            raise failed[0]
        for failure in failed:
            logger.error("%s: its routes answer 502 until a save fixes it", failure)

    async def invoke(self, function: Function, event: Any) -> Any:
        """The handler's result; WorkerError; or InvocationTimeoutError past its Timeout."""
        return await self.pools[function.name].invoke(event)

    def close(self) -> None:
        for pool in self.pools.values():
            pool.close()
