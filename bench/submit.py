"""Submit throughput: POST /tasks/add against a constant endpoint and the seed's task.delay(), one run.

    python -m bench.submit [--seconds 8] [--rounds 2]

All three endpoints live in one uvicorn process on one private Redis; rounds interleave them and the
best of each is kept, so the ratios are as fair as a shared 2-core machine allows.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform

import redis

from bench.common import api_process, private_redis, write_section, wrk

CASES = {
    "constant endpoint (GET, returns a dict)": ("GET", "/bench/constant", None),
    "seed pattern (sync def + task.delay())": ("POST", "/bench/seed/add", ""),
    "svc submit (POST /tasks/add)": ("POST", "/tasks/add", '{"args": [2, 3]}'),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    options = parser.parse_args()
    best = dict.fromkeys(CASES, 0.0)
    errors = dict.fromkeys(CASES, 0)
    with private_redis() as server, api_process(server.url) as base:
        client = redis.Redis.from_url(server.url)
        for _ in range(options.rounds):
            for label, (_, path, body) in CASES.items():
                rate, bad = wrk(base + path, options.seconds, options.connections, body)
                best[label] = max(best[label], rate)
                errors[label] += bad
                client.flushdb()
    constant = best["constant endpoint (GET, returns a dict)"]
    seed = best["seed pattern (sync def + task.delay())"]
    ours = best["svc submit (POST /tasks/add)"]
    lines = [
        "## Submit throughput",
        "",
        f"`python -m bench.submit --seconds {options.seconds} --rounds {options.rounds}` — wrk, "
        f"{options.connections} connections, one uvicorn process (uvloop, httptools), private Redis; "
        f"{platform.machine()}, {dt.date.today().isoformat()}.",
        "",
        "| endpoint | req/s | × constant | non-2xx |",
        "| --- | ---: | ---: | ---: |",
    ]
    for label, rate in best.items():
        lines.append(f"| {label} | {rate:,.0f} | {rate / constant:.2f} | {errors[label]} |")
    lines += [
        "",
        f"svc submit is **{ours / constant:.2f}×** the constant endpoint and "
        f"**{ours / seed:.1f}×** the seed's pattern.",
    ]
    text = "\n".join(lines)
    print(text)
    write_section("submit", text)


if __name__ == "__main__":
    main()
