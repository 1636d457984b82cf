"""Where the time goes: py-spy on the API process during the submit load and during a fan-out.

    python -m bench.profiles [--seconds 8] [--subscribers 10000]

Samples the event loop's thread (100 Hz, non-blocking) and ranks functions by own time (where the
CPU is) and by time including callees (which layer costs what). Needs py-spy (pip install py-spy) and
permission to ptrace the API process (root, or kernel.yama.ptrace_scope=0).
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform

from bench import fanout
from bench.common import api_service, private_redis, provenance, py_spy, raise_nofile, write_section, wrk

READING = """\
What the profiles say (this run), and what was done about them (each change with its before and after
is in "Optimisations" below):

- **Submit** — FastAPI's routing, dependency injection and exception middlewares, its OpenTelemetry
  lookups, Celery's `saferepr` and `anon_nodename()`, and `uuid.UUID.__init__` used to dominate; the
  submit now runs in `svc/fastpath.py` ahead of FastAPI's stack, with those computed once or cheaply.
  What remains is spread thin: uvicorn's response send, redis-py's pipeline (packing the EVAL and
  parsing replies), pydantic validation of the body and the arguments, the message and envelope, the
  token, and the monitor parsing each PENDING event (`SVC_MONITOR=false` removes that). The constant
  endpoint does none of it, which is the distance to the 0.8x target.
- **Fan-out** — the loop's time goes to sending frames: `Connection._write` → Starlette
  `WebSocket.send_text` → uvicorn's `WebSocketsSansIOProtocol.send` → websockets framing → transport
  writes, one per subscriber per event (each event is serialised once for all its subscribers), and to
  redis-py's pub/sub reads. Writing about 30,000 frames from one Python process is what separates svc's
  delivery time from a single raw Redis subscriber's; it is the next thing to work on.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--top", type=int, default=15)
    options = parser.parse_args()
    raise_nofile()
    with private_redis() as server, api_service(server.url) as api:
        wrk(f"{api.base}/tasks/add", 2, body='{"args": [2, 3]}')  # warm-up
        with py_spy(api.pid, options.seconds) as submit_profile:
            rate, _ = wrk(f"{api.base}/tasks/add", options.seconds, body='{"args": [2, 3]}')
    outcome = fanout.run_size(options.subscribers, options.tasks, clients=4, profile=True)
    lines = [
        "## Where the time goes",
        "",
        f"`python -m bench.profiles --seconds {options.seconds} --subscribers {options.subscribers}` — "
        f"py-spy on the API process's event-loop thread; {provenance()}; {platform.machine()}, "
        f"{dt.date.today().isoformat()}. Own % is where the CPU was; incl. % counts a function with "
        "everything it called (a lower bound: non-blocking sampling truncates some stacks).",
        "",
        f"### Submit: wrk, 32 connections, `POST /tasks/add` ({rate:,.0f} req/s under the profiler)",
        "",
        submit_profile[0].table(options.top) if submit_profile else "(no profile: py-spy missing)",
        "",
        f"### Fan-out: {options.subscribers:,} subscribers over {options.tasks} tasks, from the worker's "
        f"start to the last delivery ({outcome.terminals:,} terminal events delivered)",
        "",
        outcome.profile.table(options.top) if outcome.profile else "(no profile: py-spy missing)",
        "",
        READING,
    ]
    text = "\n".join(lines)
    print(text)
    write_section("profiles", text)


if __name__ == "__main__":
    main()
