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
  lookups, Celery's `saferepr` and `anon_nodename()`, `uuid.UUID.__init__`, redis-py's pipeline, an
  `asyncio.Semaphore` and per-reply timeouts in the batcher, and `prometheus_client`'s labelled
  counters used to dominate; each is gone or computed once. What remains is spread thin: uvicorn's
  response send (which the constant endpoint pays too), the message and its envelope (Celery's
  `as_task_v2`, base64 and JSON), pydantic validation of the body and the arguments, the token, one
  timeout per Redis round trip, and the monitor reading each PENDING event back (`SVC_MONITOR=false`
  removes that).
- **Fan-out** — frames are written by the bridge's dispatch straight to each socket's transport
  (`Connection._send_now` → `SvcWebSocketProtocol.write_frame`, svc/edge/wsprotocol.py), each event's
  frame encoded once for all its subscribers; the own time there is the transport's write itself, as
  in the ceiling. What remains that the ceiling does not do: the close after each `/ws/tasks/{id}`
  terminal event (Starlette's `WebSocket.close` → uvicorn → websockets' close frame, sent at once from
  the dispatch), reading the client's answering close, and each socket's ASGI task ending. The delay
  column is mostly the clients': they share the 2 cores.
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
