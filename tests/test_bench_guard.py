"""Regression guard for the benchmarks (BENCHMARKS.md): seconds-long runs that fail only on a gross
regression, never on ordinary noise of a shared machine.

It compares the API process's CPU time per request, submit against a constant endpoint in the same
process: unlike req/s, CPU per request hardly moves when other programs compete for the cores. The full
benchmarks are `python -m bench`; this is their short form, run with the tests.
"""

from __future__ import annotations

import shutil

import pytest
import redis

from bench.common import api_service, cpu_seconds, private_redis, wrk

# Today a submit costs about 1.2-1.3x the constant endpoint's CPU (BENCHMARKS.md); before the
# optimisations about 4x. Fail on a gross regression only: a submit costing over 2x, which would put its
# throughput under half the constant endpoint's (the example of a gross regression).
MIN_CPU_RATIO = 0.5
SECONDS = 2
ROUNDS = 3
CASES = {"constant": ("/bench/constant", None), "submit": ("/tasks/add", '{"args": [2, 3]}')}


@pytest.mark.timeout(120)
def test_submit_costs_no_more_than_a_few_constant_requests() -> None:
    """CPU per submit is at least MIN_CPU_RATIO of CPU per constant request (the best of ROUNDS
    interleaved 2-second wrk runs of each, stopping once it passes)."""
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (apt-get install wrk): the submit guard cannot run")
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
                assert bad == 0, f"{bad} requests to {path} failed"
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
    assert ratio >= MIN_CPU_RATIO, (
        f"a submit costs {cheapest['submit']:.0f} µs of CPU, {1 / ratio:.1f}x the constant endpoint's "
        f"{cheapest['constant']:.0f} µs (guard: at most {1 / MIN_CPU_RATIO:.1f}x); see bench.submit"
    )
