"""Python function calls per pub/sub message the bridge routes (cProfile: deterministic on a noisy machine).

    python -m bench.bridge_reads [--messages 5000]
    BENCH_SVC_TREE=/tmp/svc-head python -m bench.bridge_reads   # another version of svc, for an A/B

One Bridge in this process, one subscription on one channel; a separate process publishes the messages
in one pipeline. Every call this process makes until the last message reaches the subscription is
counted and divided by the messages. Prints its figure; BENCHMARKS.md quotes it by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys

from bench.common import SVC_TREE, private_redis

PUBLISHER = """
import sys, redis, orjson
client = redis.Redis.from_url(sys.argv[1])
pipe = client.pipeline(transaction=False)
for seq in range(1, int(sys.argv[2]) + 1):
    pipe.publish("bench:task:t1", orjson.dumps({"task_id": "t1", "seq": seq, "state": "PROGRESS", "ts": 0}))
pipe.execute()
"""


class CountingSink:
    """Counts frames; sets ``done`` at the expected number."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.count = 0
        self.done = asyncio.Event()

    def push(self, task_id: str | None, seq: int, state: str, text: str) -> None:
        """One frame routed to this subscriber."""
        self.count += 1
        if self.count >= self.expected:
            self.done.set()


async def measure(redis_url: str, messages: int) -> float:
    """Python calls per routed message."""
    sys.path.insert(0, str(SVC_TREE))
    import redis.asyncio as aioredis
    from celery import Celery

    from svc.bridge import Bridge
    from svc.fanout.history import History

    client = aioredis.Redis.from_url(redis_url)
    bridge = Bridge(aioredis.Redis.from_url(redis_url), History(client, "bench", Celery(), None), "bench")
    await bridge.start()
    await asyncio.wait_for(bridge.connected.wait(), 10)
    sink = CountingSink(messages)
    await bridge.open("t1", 0, sink)
    profile = cProfile.Profile()
    profile.enable()
    publisher = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PUBLISHER, redis_url, str(messages)
    )
    await asyncio.wait_for(sink.done.wait(), 120)
    profile.disable()
    await publisher.wait()
    await bridge.stop()
    await client.aclose()
    return float(pstats.Stats(profile).total_calls) / sink.count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    options = parser.parse_args()
    with private_redis() as server:
        calls = asyncio.run(measure(server.url, options.messages))
    print(f"svc from {SVC_TREE}: {calls:.1f} Python calls per routed message ({options.messages:,} messages)")


if __name__ == "__main__":
    main()
