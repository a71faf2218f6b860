"""`POST /api/auth/password-reset` for a known and an unknown email, through the auth
function's real handler (API Gateway events, one warm process) at `BCRYPT_ROUNDS=12`, with
the mail sent to a real SMTP server on 127.0.0.1: the median wall time of each, requests
interleaved, without the route's fixed answer time and with the default
(`PASSWORD_RESET_ANSWER_SECONDS=0.5`). The route's promise is that the two take alike.

Usage: .venv/bin/python -m bench.password_reset [--rounds N]  (prints a table; not part of
`make bench`)
"""

import argparse
import contextlib
import io
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import bcrypt

from bench.database import PASSWORD, bench_database, postgres_available
from localapi.events import LambdaContext, http_event

KNOWN = "reset@example.com"
UNKNOWN = "nobody@example.com"


def auth_handler() -> Any:
    # Imported here: the function reads its settings, set by `measure`, as it loads.
    from tests.support.functions import load_function

    return load_function("auth").handler


def medians(handler: Any, rounds: int) -> dict[str, float]:
    context = LambdaContext()
    events = {
        email: http_event(
            "POST",
            "/api/auth/password-reset",
            headers={"content-type": "application/json"},
            body=json.dumps({"email": email}),
        )
        for email in (KNOWN, UNKNOWN)
    }
    times: dict[str, list[float]] = {KNOWN: [], UNKNOWN: []}
    for _ in range(rounds):
        for email, event in events.items():
            started = time.perf_counter()
            response = handler(event, context)
            times[email].append((time.perf_counter() - started) * 1000)
            assert response["statusCode"] == 202, response
    return {email: statistics.median(values) for email, values in times.items()}


def measure(backend: str, rounds: int) -> dict[str, dict[str, float]]:
    from taskapi import state
    from tests.support.smtp import smtp_server

    with (
        tempfile.TemporaryDirectory() as folder,
        bench_database(backend, Path(folder), tasks=0) as database,
        smtp_server() as mailbox,
    ):
        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(12)).decode()
        database.add_user(email=KNOWN, hashed_password=hashed)
        os.environ.update(
            {
                "DATABASE_URL": database.url,
                "BCRYPT_ROUNDS": "12",
                # A line per request and per SMTP command would bury the table.
                "LOG_LEVEL": "WARNING",
                "SMTP_SERVER": "127.0.0.1",
                "SMTP_PORT": str(mailbox.port),
                "SMTP_STARTTLS": "false",
                "PASSWORD_RESET_MAX_PER_EMAIL": str(4 * rounds + 10),
                "PASSWORD_RESET_MAX_PER_SOURCE": str(8 * rounds + 10),
            }
        )
        result = {}
        for answer_seconds in ("0", "0.5"):
            os.environ["PASSWORD_RESET_ANSWER_SECONDS"] = answer_seconds
            state.reset()
            handler = auth_handler()
            medians(handler, 2)  # warm up: the first request of each kind
            result[answer_seconds] = medians(handler, rounds)
        state.reset()
        assert len(mailbox.to(KNOWN)) == 2 * (rounds + 2), "a known email's reset sent no mail"
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    rounds = parser.parse_args().rounds
    backends = ["sqlite"] + (["postgresql"] if postgres_available() else [])
    print("| backend | answer seconds | known email (ms) | unknown email (ms) | known / unknown |")
    print("|---|---|---|---|---|")
    for backend in backends:
        # The EmailSent metric's line per mail goes to stdout, as Lambda's log wants it.
        with contextlib.redirect_stdout(io.StringIO()):
            results = measure(backend, rounds)
        for answer_seconds, times in results.items():
            known, unknown = times[KNOWN], times[UNKNOWN]
            print(
                f"| {backend} | {answer_seconds} | {known:.1f} | {unknown:.1f} "
                f"| {known / unknown:.2f} |"
            )


if __name__ == "__main__":
    main()
