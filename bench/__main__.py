"""Every benchmark in turn, each writing its own section of BENCHMARKS.md.

    python -m bench [--only latency,fanout]

Defaults of each benchmark apply (about 5 minutes in all on 2 cores). Set BENCH_SVC_TREE to measure
another svc tree (e.g. `git archive HEAD svc clients` unpacked elsewhere) than this checkout's.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from bench.common import ROOT

BENCHMARKS = [
    "guard",
    "submit",
    "latency",
    "loop_lag",
    "fanout",
    "idle",
    "streams",
    "cluster",
    "client",
    "profiles",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated subset, in order")
    options = parser.parse_args()
    failed = []
    for name in options.only.split(","):
        if name not in BENCHMARKS:
            raise SystemExit(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}")
        print(f"== bench.{name}", flush=True)
        started = time.monotonic()
        # One process per benchmark: each raises limits and starts children of its own.
        code = subprocess.run([sys.executable, "-m", f"bench.{name}"], cwd=ROOT, check=False).returncode
        print(f"== bench.{name}: exit {code} after {time.monotonic() - started:.0f} s", flush=True)
        if code:
            failed.append(name)
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
