"""Regression guard for the benchmarks (BENCHMARKS.md): seconds-long runs that fail only on a gross
regression, never on ordinary noise of a shared machine.

    python -m bench.guard [submit] [fanout]   # exit 1 on a gross regression of a submit's or a frame's CPU

Two ratios of CPU time, each against a yardstick measured in the same run, because unlike req/s or
delays, CPU per request hardly moves when other programs compete for the cores:

- submit: the API process's CPU per ``POST /tasks/add`` against a constant endpoint in the same process;
- fan-out: ``svc api``'s CPU per delivered frame against the in-repo ceiling (bench/ceiling.py) at
  1,000 subscribers (bench.fanout, one size).

Each fails only on a gross regression, never on ordinary noise of a shared machine: the best of a few
rounds is taken, stopping once it passes. The test command (scripts/test) runs the fan-out guard after
the suite; `python -m bench` runs both first.
"""

from __future__ import annotations

import shutil
import sys

import redis

from bench import fanout
from bench.common import api_service, cpu_seconds, private_redis, raise_nofile, wrk

# Today a submit costs about 1.2-1.3x the constant endpoint's CPU (BENCHMARKS.md); before the
# optimisations about 4x. Fail on a gross regression only: a submit costing over 2x, which would put its
# throughput under half the constant endpoint's (the example of a gross regression).
MIN_CPU_RATIO = 0.5
SECONDS = 2
ROUNDS = 3
CASES = {"constant": ("/bench/constant", None), "submit": ("/tasks/add", '{"args": [2, 3]}')}
# Today svc api spends about 3x the ceiling's CPU per frame at 1,000 subscribers (BENCHMARKS.md, where
# the per-subscriber handshake, history read and close weigh most); before issue 15, 3.3-3.5x, and
# with an encode per socket through Starlette, uvicorn and websockets over 5x at 10,000. Fail past 8x.
MAX_FANOUT_RATIO = 8.0
FANOUT_SUBSCRIBERS = 1000
FANOUT_TASKS = 100


def submit_guard() -> int:
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


def fanout_guard() -> int:
    """svc api's CPU per delivered frame is at most MAX_FANOUT_RATIO times the ceiling's (the best of
    ROUNDS pairs of runs, stopping once it passes); 0 when it holds, else 1."""
    raise_nofile()
    best = float("inf")
    figures = ""
    for _ in range(ROUNDS):
        svc = fanout.run_size(FANOUT_SUBSCRIBERS, FANOUT_TASKS, clients=2, server="svc")
        ceiling = fanout.run_size(FANOUT_SUBSCRIBERS, FANOUT_TASKS, clients=2, server="ceiling")
        for outcome in (svc, ceiling):
            if outcome.terminals < outcome.subscribers:
                print(
                    f"bench.guard: {outcome.server} delivered {outcome.terminals:,} of "
                    f"{outcome.subscribers:,} terminal events ({'; '.join(outcome.errors[:2])})"
                )
                return 1
        ratio = svc.cpu_per_frame_us / ceiling.cpu_per_frame_us
        if ratio < best:
            best = ratio
            figures = f"svc {svc.cpu_per_frame_us:.0f} µs, ceiling {ceiling.cpu_per_frame_us:.0f} µs"
        if best <= MAX_FANOUT_RATIO:
            break
    print(f"CPU per frame at {FANOUT_SUBSCRIBERS:,} subscribers: {figures} (ratio {best:.1f})")
    if best > MAX_FANOUT_RATIO:
        print(
            f"bench.guard: a delivered frame costs svc api {best:.1f}x the ceiling's CPU (guard: at most "
            f"{MAX_FANOUT_RATIO:.0f}x); see bench.fanout"
        )
        return 1
    return 0


GUARDS = {"submit": submit_guard, "fanout": fanout_guard}


def main(names: list[str] | None = None) -> int:
    """The guards named (all of them by default); 0 when each holds, else 1."""
    chosen = names or list(GUARDS)
    unknown = [name for name in chosen if name not in GUARDS]
    if unknown:
        print(f"bench.guard: unknown guard(s) {', '.join(unknown)}; choose from {', '.join(GUARDS)}")
        return 2
    return max(GUARDS[name]() for name in chosen)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
