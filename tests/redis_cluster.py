"""A real Redis Cluster for the tests: redis-servers on free ports, each in a folder of its own under a
directory the caller gives, made one cluster by ``redis-cli --cluster create``; a master can be
SIGKILLed and its replica's promotion waited for.

Needs redis-server 7.0 or newer (for ``cluster-port``, and for sharded pub/sub in the tests) and the
redis-cli beside it or on PATH. Every node is started with ``die_with_parent`` (see ``svc.embedded``):
if the test process dies, even by SIGKILL, the kernel stops them."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from svc.embedded import RedisProcess, free_port, redis_binary, start_redis

HOST = "127.0.0.1"
SLOTS = 16384

# What every node runs with, beyond what start_redis already gives (its port, --bind 127.0.0.1, --save ''
# and --dir, the node's own folder):
NODE_OPTIONS = (
    "--cluster-enabled",
    "yes",
    # relative to --dir, so each node keeps its own
    "--cluster-config-file",
    "nodes.conf",
    # a master silent for 1 s is PFAIL, then FAIL once a majority of masters agree: failover in seconds
    # (the default, 15 s, would make every failover test wait that long)
    "--cluster-node-timeout",
    "1000",
    # the AOF as a production node has it (start_redis's own --appendonly no comes first; the last wins)
    "--appendonly",
    "yes",
    "--appendfsync",
    "everysec",
    # a master starts a replica's full sync at once (the default, 5 s, waits for more replicas to share
    # one diskless transfer: 5 s more for every cluster to be ready)
    "--repl-diskless-sync-delay",
    "0",
)
# Not set, on purpose: cluster-replica-validity-factor. Its default (10) lets a replica fail over while
# its link has been down less than 10 node timeouts + repl-ping-replica-period (about 20 s here); the
# replica of a master SIGKILLed in a test was in sync until the kill, far inside that.


@dataclass(frozen=True)
class ClusterNode:
    """One line of ``CLUSTER NODES`` as a node sees it."""

    id: str
    port: int
    flags: frozenset[str]  # myself, master, slave, fail, fail?, handshake, noaddr, nofailover, ...
    master_id: str | None  # a replica's master; None for a master
    slots: tuple[tuple[int, int], ...]  # inclusive ranges it serves (slots being migrated left out)

    @property
    def is_master(self) -> bool:
        """True if it is a master not flagged as failing (``fail``, or ``fail?`` from this view)."""
        return "master" in self.flags and not self.flags & {"fail", "fail?", "noaddr", "handshake"}

    def serves(self, slot: int) -> bool:
        """True if ``slot`` is in one of its ranges."""
        return any(first <= slot <= last for first, last in self.slots)


def parse_cluster_nodes(text: str) -> list[ClusterNode]:
    """``CLUSTER NODES``'s reply, one ClusterNode a line."""
    nodes = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 8:
            continue
        # ip:port@cport[,hostname]; a node not yet reachable may show only ":0@0"
        address = fields[1].split("@", 1)[0]
        port = int(address.rsplit(":", 1)[1] or 0)
        ranges = []
        for field in fields[8:]:
            if field.startswith("["):  # [slot->-id] migrating, [slot-<-id] importing
                continue
            first, _, last = field.partition("-")
            ranges.append((int(first), int(last or first)))
        nodes.append(
            ClusterNode(
                id=fields[0],
                port=port,
                flags=frozenset(fields[2].split(",")),
                master_id=None if fields[3] == "-" else fields[3],
                slots=tuple(ranges),
            )
        )
    return nodes


def redis_cli() -> str:
    """The redis-cli beside the redis-server svc.embedded runs, else the one on PATH."""
    beside = Path(redis_binary()).with_name("redis-cli")
    if beside.is_file():
        return str(beside)
    found = shutil.which("redis-cli")
    if found is None:
        raise RuntimeError("no redis-cli found: install Redis (apt-get install redis-server)")
    return found


class RedisCluster:
    """``masters`` masters with ``replicas_per_master`` replicas each, every node in its own folder under
    ``directory`` (``node0``, ``node1``, ...: emptied first); returns once the cluster is whole (see
    ``wait_until_ready``). Call ``stop()`` to end.

    Redis Cluster needs at least 3 masters (redis-cli refuses fewer)."""

    def __init__(self, directory: Path, masters: int = 3, replicas_per_master: int = 1) -> None:
        if masters < 3 or replicas_per_master < 0:
            raise ValueError("a Redis Cluster needs at least 3 masters, and replicas_per_master >= 0")
        self.directory = directory
        self.masters_wanted = masters
        self.replicas_per_master = replicas_per_master
        self.nodes_started: list[RedisProcess] = []
        self._ports_used: set[int] = set()  # client and bus ports of the nodes started
        self._killed: dict[int, tuple[tuple[int, int], ...]] = {}  # port -> slots it served then
        try:
            for index in range(masters * (1 + replicas_per_master)):
                self.nodes_started.append(self._start_node(index))
            self._create()
            self.wait_until_ready()
        except BaseException:
            self.stop()
            raise

    def _start_node(self, index: int) -> RedisProcess:
        folder = self.directory / f"node{index}"
        for attempt in range(3):  # a port found free can be taken before redis-server binds it
            shutil.rmtree(folder, ignore_errors=True)  # no nodes.conf of an attempt that failed
            folder.mkdir(parents=True)
            port, bus = self._free_ports()
            self._ports_used |= {port, bus}
            try:
                # cluster-port: the bus's port, free too (by default port + 10000, which may be in use, or
                # past 65535 for a port from the ephemeral range)
                extra = (*NODE_OPTIONS, "--cluster-port", str(bus))
                return start_redis(port, folder, *extra, die_with_parent=True)
            except RuntimeError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _free_ports(self) -> tuple[int, int]:
        chosen: list[int] = []
        while len(chosen) < 2:
            port = free_port()
            if port not in self._ports_used and port not in chosen:
                chosen.append(port)
        return chosen[0], chosen[1]

    def _create(self) -> None:
        addresses = [f"{HOST}:{node.port}" for node in self.nodes_started]
        command = [redis_cli(), "--cluster", "create", *addresses]
        command += ["--cluster-replicas", str(self.replicas_per_master), "--cluster-yes"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{done.stdout}\n{done.stderr}")

    # -- what a live node says

    @staticmethod
    def _client(port: int) -> redis.Redis:
        return redis.Redis(
            host=HOST, port=port, socket_timeout=2, socket_connect_timeout=2, decode_responses=True
        )

    @classmethod
    def _ask(cls, port: int, *command: str) -> str:
        with cls._client(port) as client:
            reply = client.execute_command(*command)
        assert isinstance(reply, str), reply
        return reply

    @classmethod
    def _cluster_info(cls, port: int) -> dict[str, str]:
        """``CLUSTER INFO`` (``key:value`` lines) as a dict."""
        lines = cls._ask(port, "CLUSTER", "INFO").splitlines()
        return dict(line.split(":", 1) for line in lines if ":" in line)

    @classmethod
    def _replication(cls, port: int) -> dict[str, Any]:
        """``INFO replication`` as redis-py parses it."""
        with cls._client(port) as client:
            info = client.info("replication")
        assert isinstance(info, dict), info
        return info

    def _live_ports(self) -> list[int]:
        return [node.port for node in self.nodes_started if node.process.poll() is None]

    def nodes(self) -> list[ClusterNode]:
        """Every node of the cluster as the first live node that answers sees it (``CLUSTER NODES``)."""
        for port in self._live_ports():
            try:
                return parse_cluster_nodes(self._ask(port, "CLUSTER", "NODES"))
            except redis.RedisError:
                continue
        raise RuntimeError("no node of the cluster answers")

    # -- the public face

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        """(host, port) of every node started and not killed, in the order they were started."""
        return [(HOST, port) for port in self._live_ports()]

    @property
    def url(self) -> str:
        """svc's form for a cluster, naming the first three of ``startup_nodes``:
        ``redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3/``."""
        hosts = ",".join(f"{host}:{port}" for host, port in self.startup_nodes[:3])
        return f"redis+cluster://{hosts}/"

    def masters(self) -> list[int]:
        """Ports of the nodes that are masters now (not flagged failing) as a live node sees it, sorted."""
        return sorted(node.port for node in self.nodes() if node.is_master)

    def master_of_slot(self, slot: int) -> int:
        """Port of the master that serves ``slot``, as a live node sees it (LookupError if none does): a
        master killed keeps its slots, flagged failing, until its replica is promoted."""
        if not 0 <= slot < SLOTS:
            raise ValueError(f"no slot {slot}")
        for node in self.nodes():
            if "master" in node.flags and node.serves(slot):
                return node.port
        raise LookupError(f"no master serves slot {slot}")

    def move_slot(self, slot: int, to_port: int) -> None:
        """Migrate ``slot`` and its keys to the master at ``to_port`` while clients go on using it, as
        ``redis-cli --cluster reshard`` does: IMPORTING on the target, MIGRATING on the source, MIGRATE
        of its keys in batches, then ``CLUSTER SETSLOT … NODE`` on every master (the source unsubscribes
        the slot's shard channels then)."""
        from_port = self.master_of_slot(slot)
        ids = {node.port: node.id for node in self.nodes()}
        self._ask(to_port, "CLUSTER", "SETSLOT", str(slot), "IMPORTING", ids[from_port])
        self._ask(from_port, "CLUSTER", "SETSLOT", str(slot), "MIGRATING", ids[to_port])
        with self._client(from_port) as source:
            while keys := source.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
                source.execute_command("MIGRATE", HOST, to_port, "", 0, 5000, "KEYS", *keys)
        for port in self.masters():
            self._ask(port, "CLUSTER", "SETSLOT", str(slot), "NODE", ids[to_port])
        self._until(
            lambda: None if self.master_of_slot(slot) == to_port else f"slot {slot} still on {from_port}",
            f"slot {slot} on {to_port}",
            10,
        )

    def kill(self, port: int) -> None:
        """SIGKILL the node on ``port`` and reap it; the slots it served are remembered for
        ``wait_until_promoted``."""
        node = self._node(port)
        if node.process.poll() is not None:
            raise RuntimeError(f"the node on port {port} is not running")
        self._killed[port] = next((seen.slots for seen in self.nodes() if seen.port == port), ())
        node.process.send_signal(signal.SIGKILL)
        node.process.wait(timeout=10)

    def wait_until_promoted(self, old_port: int, timeout: float = 30) -> int:
        """Wait until every live node says ``cluster_state:ok`` with all slots assigned, and agrees that
        every slot the master on ``old_port`` served (when ``kill`` stopped it) belongs to one new
        master, which itself says ``role:master``; return that master's port."""
        slots = self._killed.get(old_port)
        if slots is None:
            slots = next((node.slots for node in self.nodes() if node.port == old_port), ())
        if not slots:
            raise ValueError(f"the node on port {old_port} served no slots")
        found: list[int] = []

        def promoted() -> str | None:
            owners = set()
            for port in self._live_ports():
                problem = self._not_ok(port)
                if problem:
                    return problem
                seen = parse_cluster_nodes(self._ask(port, "CLUSTER", "NODES"))
                for first, last in slots:
                    for slot in (first, last):  # ranges move whole, with their master
                        owners |= {node.port for node in seen if node.is_master and node.serves(slot)}
            if len(owners) != 1 or old_port in owners:
                return f"slots of {old_port} served by {sorted(owners)}"
            (new,) = owners
            if self._replication(new).get("role") != "master":
                return f"{new} not yet role:master"
            found.append(new)
            return None

        self._until(promoted, f"a new master for the slots of {old_port}", timeout)
        return found[-1]

    def wait_until_ready(self, timeout: float = 30) -> None:
        """Wait until the cluster is whole, as made: every live node says ``cluster_state:ok``, all 16384
        slots assigned and every other node known; there are ``masters`` masters, each with
        ``replicas_per_master`` replicas; and every replica says ``master_link_status:up``."""

        def ready() -> str | None:
            live = self._live_ports()
            for port in live:
                problem = self._not_ok(port)
                if problem:
                    return problem
                info = self._cluster_info(port)
                if int(info.get("cluster_known_nodes", 0)) != len(self.nodes_started):
                    return f"{port} knows {info.get('cluster_known_nodes')} nodes"
            nodes = self.nodes()
            masters = [node.port for node in nodes if node.is_master and node.slots]
            if len(masters) != self.masters_wanted:
                return f"{len(masters)} masters serving slots of {self.masters_wanted}"
            replicas = [node.port for node in nodes if "slave" in node.flags]
            expected = self.masters_wanted * self.replicas_per_master
            if len(replicas) != expected:
                return f"{len(replicas)} replicas of {expected}"
            for port in replicas:
                link = self._replication(port).get("master_link_status")
                if link != "up":
                    return f"replica {port}: master_link_status {link}"
            return None

        self._until(ready, "the cluster to be ready", timeout)

    def _not_ok(self, port: int) -> str | None:
        info = self._cluster_info(port)
        if info.get("cluster_state") != "ok":
            return f"{port}: cluster_state {info.get('cluster_state')}"
        if info.get("cluster_slots_assigned") != str(SLOTS):
            return f"{port}: {info.get('cluster_slots_assigned')} slots assigned"
        return None

    @staticmethod
    def _until(check: Callable[[], str | None], what: str, timeout: float) -> None:
        """Poll ``check`` (None once satisfied, else what is missing) until satisfied or ``timeout``."""
        deadline = time.monotonic() + timeout
        missing = "nothing asked yet"
        while time.monotonic() < deadline:
            try:
                answer = check()
            except redis.RedisError as error:
                answer = f"{type(error).__name__}: {error}"
            if answer is None:
                return
            missing = answer
            time.sleep(0.05)
        raise TimeoutError(f"timed out waiting for {what} (last: {missing})")

    def _node(self, port: int) -> RedisProcess:
        for node in self.nodes_started:
            if node.port == port:
                return node
        raise KeyError(f"no node of this cluster on port {port}")

    def stop(self) -> None:
        """Stop every node (SIGTERM, SIGKILL after 10 s) and wait for each to exit; their folders stay."""
        for node in self.nodes_started:
            if node.process.poll() is None:
                node.process.terminate()
        for node in self.nodes_started:
            node.stop()
