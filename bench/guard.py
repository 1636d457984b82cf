"""Regression guard for the benchmarks (BENCHMARKS.md): seconds-long runs that fail only on a gross
regression, never on ordinary noise of a shared machine.

    python -m bench.guard        # exit 1 on a gross regression of a submit's CPU

It compares the API process's CPU time per request, submit against a constant endpoint in the same
process: unlike req/s, CPU per request hardly moves when other programs compete for the cores. A figure
is a benchmark's business, not a test's (a loaded machine must never fail the test suite), so this lives
here, beside the full benchmarks (`python -m bench`, which runs it first).
"""

from __future__ import annotations

import shutil
import sys

import redis

from bench.common import api_service, cpu_seconds, private_redis, wrk

# Today a submit costs about 1.2-1.3x the constant endpoint's CPU (BENCHMARKS.md); before the
# optimisations about 4x. Fail on a gross regression only: a submit costing over 2x, which would put its
# throughput under half the constant endpoint's (the example of a gross regression).
MIN_CPU_RATIO = 0.5
SECONDS = 2
ROUNDS = 3
CASES = {"constant": ("/bench/constant", None), "submit": ("/tasks/add", '{"args": [2, 3]}')}


def main() -> int:
    """CPU per submit is at least MIN_CPU_RATIO of CPU per constant request (the best of ROUNDS
    interleaved 2-second wrk runs of each, stopping once it passes); 0 when it holds, else 1."""
    if shutil.which("wrk") is None:
        print("bench.guard: wrk is not installed (apt-get install wrk): the submit guard cannot run")
        return 1
    cheapest = {case: float("inf") for case in CASES}  # CPU microseconds per request
    rates = dict.fromkeys(CASES, 0.0)
    with private_redis() as server, api_service(server.url) as api:
        client = redis.Redis.from_url(server.url)
        wrk(f"{api.base}/tasks/add", 1, body='{"args": [2, 3]}')  # warm-up: pools, first-call paths
        for _ in range(ROUNDS):
            for case, (path, body) in CASES.items():
                before = cpu_seconds(api.pid)
                rate, bad = wrk(f"{api.base}{path}", SECONDS, body=body)
                used = cpu_seconds(api.pid) - before
                if bad:
                    print(f"bench.guard: {bad} requests to {path} failed")
                    return 1
                cheapest[case] = min(cheapest[case], used / (rate * SECONDS) * 1e6)
                rates[case] = max(rates[case], rate)
            client.flushdb()
            if cheapest["constant"] / cheapest["submit"] >= MIN_CPU_RATIO:
                break
        client.close()
    ratio = cheapest["constant"] / cheapest["submit"]
    print(
        f"CPU per request: constant {cheapest['constant']:.0f} µs, submit {cheapest['submit']:.0f} µs "
        f"(ratio {ratio:.2f}); req/s constant {rates['constant']:,.0f}, submit {rates['submit']:,.0f}"
    )
    if ratio < MIN_CPU_RATIO:
        print(
            f"bench.guard: a submit costs {cheapest['submit']:.0f} µs of CPU, {1 / ratio:.1f}x the"
            f" constant endpoint's {cheapest['constant']:.0f} µs (guard: at most {1 / MIN_CPU_RATIO:.1f}x);"
            " see bench.submit"
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
