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
What the profiles say (reading of the run recorded in this file; the recommendations are in the report
of issue 8 and repeated here):

- **Submit** — the loop spends most of its time in uvicorn/Starlette/FastAPI machinery, not in svc:
  middleware layers (`BodyLimit`, FastAPI's own body limit and exception telemetry, `ServerErrorMiddleware`,
  `AsyncExitStackMiddleware`), `solve_dependencies`/`request_params_to_args` and pydantic validation of
  the body. svc's own work is `prepare` (Celery's `as_task_v2`, whose `saferepr` of args/kwargs and
  `anon_nodename()` for the `origin` header are pure waste here), `redis_envelope` and the batched
  pipeline. A thread hop per request (`run_in_threadpool` → `anyio.to_thread.run_sync`, seen as
  `Condition.notify` in the loop) comes from the sync dependency `api_key_required`.
- **Fan-out** — the loop's time goes to sending frames: `Connection._write` → Starlette
  `WebSocket.send_text` → uvicorn's `WebSocketProtocol.asgi_send` → websockets framing → transport
  writes, one per subscriber per event, plus one task wake-up per frame (`Outbox.push` → `Event.set`
  → `Outbox.get`), and uvicorn's keep-alive pings (one per connection every 20 s: 500/s at 10,000).
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
