"""Run by `bench/login.py` as `python -c CODE config.json result.json` with the layer on
`PYTHONPATH`: a fresh auth function logs one user in several times, interleaved with a
bare `bcrypt.checkpw` of the same hash; every bcrypt call the login makes is counted."""

import importlib.util
import json
import os
import sys
import time
from typing import Any

import bcrypt

config: dict[str, Any] = json.loads(open(sys.argv[1]).read())  # noqa: SIM115
calls: list[int] = []  # the cost (log2 rounds) of each bcrypt call


def counted(function: Any) -> Any:
    def wrapper(password: bytes, salt_or_hash: bytes) -> Any:
        calls.append(int(salt_or_hash.split(b"$")[2]))
        return function(password, salt_or_hash)

    return wrapper


# passlib looks `hashpw` up on the module at every call, so this sees all of them.
checkpw = bcrypt.checkpw
bcrypt.hashpw = counted(bcrypt.hashpw)
bcrypt.checkpw = counted(bcrypt.checkpw)

root = config["root"]
sys.path.insert(0, root)
spec = importlib.util.spec_from_file_location("bench_auth_app", os.path.join(root, "app.py"))
assert spec is not None
assert spec.loader is not None
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)


class LambdaContext:
    function_name = "bench"
    aws_request_id = "00000000-0000-0000-0000-000000000001"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:bench"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def login() -> tuple[float, list[int]]:
    calls.clear()
    started = time.perf_counter()
    response = module.handler(config["event"], LambdaContext())
    elapsed = (time.perf_counter() - started) * 1000
    if response["statusCode"] != 200:
        raise RuntimeError(f"login answered {response['statusCode']}: {response.get('body')}")
    return elapsed, list(calls)


password, hashed = config["password"].encode(), config["hash"].encode()
first_ms, first_calls = login()
logins: list[float] = []
verifies: list[float] = []
warm_calls: list[int] = []
for _ in range(config["repeats"]):
    elapsed, warm_calls = login()
    logins.append(elapsed)
    started = time.perf_counter()
    assert checkpw(password, hashed)
    verifies.append((time.perf_counter() - started) * 1000)
with open(sys.argv[2], "w") as result:
    json.dump(
        {
            "first_login_ms": first_ms,
            "first_login_bcrypt_costs": first_calls,
            "login_ms": logins,
            "login_bcrypt_costs": warm_calls,
            "checkpw_ms": verifies,
        },
        result,
    )
