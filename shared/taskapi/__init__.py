"""The Lambda layer shared by every function of the task API.

Routes and dependencies are `async def` although nothing in them awaits: FastAPI runs a
plain `def` one in a worker thread, and under Mangum, which runs every invocation as a task
of its own, anyio starts that thread afresh for each one, which costs more than the work
itself. A Lambda container serves one request at a time, so blocking
on the database (or on bcrypt) holds nothing up. This holds for every route and
dependency of the layer and of the functions, and is said only here.

One unit of work per request (the rule for every route; `taskapi.db` says how): the
request's session commits when the route returns and rolls back when it raises; query
and service helpers never commit or roll back.

Exceptions (the rule for the whole repository): an exception class is defined in the
module whose interface raises it, named `...Error`, and callers import it from there. The
layer's: `ConfigurationError` (`taskapi.settings`), `InvalidTokenError` (`taskapi.tokens`).
The local server's two runtimes share the errors of the interface they implement
(`localapi.runtime`: `FunctionInitError`, `InvocationTimeoutError`).
"""

__version__ = "0.1.0"
