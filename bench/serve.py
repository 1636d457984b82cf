"""``svc api`` itself, with the benchmark's endpoints (bench/app.py) added to the demo app it serves:

    python -m bench.serve api --port P [svc api options]

The service runs exactly as a user starts it (svc's own command: its loop choice, HTTP guards,
WebSocket settings and graceful shutdown); bench/app.py only adds routes to the same FastAPI app
object before the command serves it. Works for older trees measured with BENCH_SVC_TREE too.
"""

from __future__ import annotations

import sys

import bench.app  # noqa: F401  (adds /bench/* to the demo app that `svc api` serves)
from svc.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
