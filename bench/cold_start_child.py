"""Run by `bench/cold_start.py` as `python -c`, in a fresh interpreter whose working
directory is the task root (as Lambda's `/var/task`): import the handler, serve one event,
report. Standard library only, so that nothing is imported before the handler."""

import importlib
import json
import os
import time

started = time.perf_counter()
module_name, _, function_name = os.environ["BENCH_HANDLER"].partition(":")
module = importlib.import_module(module_name)
imported = time.perf_counter()
if "BENCH_MARK_IMPORTED" in os.environ:
    # Splits `-X importtime`'s list into the handler's import and its first request.
    os.write(2, b"bench: imported\n")


class LambdaContext:
    function_name = "bench"
    function_version = "$LATEST"
    memory_limit_in_mb = 512
    aws_request_id = "00000000-0000-0000-0000-000000000001"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:bench"
    log_group_name = "/aws/lambda/bench"
    log_stream_name = "bench"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


response = getattr(module, function_name)(json.loads(os.environ["BENCH_EVENT"]), LambdaContext())
served = time.perf_counter()
# CPU time of the whole process so far, interpreter start-up included: what the machine's
# other work does not inflate as much as it inflates wall time.
cpu_ms = time.process_time() * 1000

# VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over from the process that
# forked this one, so it would report the benchmark runner's size.
with open("/proc/self/status") as status:
    peak_kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
report = {
    "import_ms": (imported - started) * 1000,
    "first_request_ms": (served - imported) * 1000,
    "cpu_ms": cpu_ms,
    "status": response.get("statusCode", 200),
    "peak_rss_kib": peak_kib,
}
os.write(int(os.environ["BENCH_FD"]), (json.dumps(report) + "\n").encode())
