"""A cluster of real ledger nodes, one per Linux network namespace, with cuttable links.

Wiring (everything lives in namespaces this module creates; the host's own interfaces,
addresses and routes are never touched, and no packet is sent from the root namespace):

    hub namespace  <P>hub   bridge <P>b, address 10.213.0.1/16 (the test client's seat)
                            sink port <P>s (veth; its peer <P>t is an unaddressed dead end)
                            one port <P>h<i> per node
    node namespace <P>n<i>  lo up, veth <P>v<i> (peer of <P>h<i>), address 10.213.0.(i+2)/16,
                            one `python -m node node` on 10.213.0.(i+2):8470

<P> is `ats<pid>x<n>`: unique per process and per cluster, so interface names stay within
15 characters and a leftover of a crashed run can be traced to its pid (`sweep` below).
Every veth is created from inside the hub namespace with its peer born in the node
namespace, so no device ever appears in the root namespace. IPv6 is off in every namespace,
so interface counters only count the nodes' own IPv4 traffic (and a little ARP).

Address plan: 10.213.0.0/16; .1 is the hub, node i is 10.213.0.(i+2) (at most 200 nodes).

Cuts. This kernel has neither netem nor tc actions, and no nft/iptables userland; cuts use
the neighbour table instead. cut(i, j) pins, inside node i's namespace, j's address to a
made-up MAC (SINK_MAC) with a permanent ARP entry, and the same for i inside j. The bridge
has a static FDB entry sending that MAC to the sink port, so frames between i and j leave
the sender (its tx counter moves) and vanish in the hub: no error, no ICMP, no flooding to
bystanders. Connections time out as on a real partition, established ones included.
heal(i, j) deletes the two entries and ARP finds the real MACs again. The hub (the
test client) is never cut: an isolated node still answers `request()`. Cuts act on unicast
IPv4, which is all node-to-node HTTP. Multicast is not forwarded between nodes at all
(bridge ports have mcast_flood off: a network without multicast, where nodes use the static
ATS_PEERS list); Cluster(multicast=True) floods it (for mDNS discovery), and then it also
crosses cuts. Broadcast (ARP) always flows.

Teardown SIGKILLs the nodes, kills any process left inside our namespaces (only ours can
be there) and deletes the namespaces, which takes the bridge and every veth with them. It
runs on `with` exit, on exceptions and Ctrl-C, and at interpreter exit as a last resort.

    python -m tests.netns.cluster up 3 [--peers] [--env K=V]   # prints URLs, Ctrl-C tears down
    python -m tests.netns.cluster sweep                        # delete leftovers of dead runs
"""

from __future__ import annotations

import argparse
import atexit
import base64
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from tests.integration.nodeproc import READY_RE

HUB_ADDR = "10.213.0.1"
PREFIX_LEN = 16
PORT = 8470
SINK_MAC = "02:a7:5d:00:00:01"
MAX_NODES = 200
START_TIMEOUT_S = 30.0
CMD_TIMEOUT_S = 15.0
REPO = Path(__file__).resolve().parents[2]
_SEQ = itertools.count()
_LIVE: "weakref.WeakSet[Cluster]" = weakref.WeakSet()

NodeEnv = Mapping[int, Mapping[str, str]] | Callable[[int], Mapping[str, str]] | None


class ClusterError(RuntimeError):
    """A namespace command failed or a node did not become ready."""


class Unreachable(OSError):
    """An HTTP request inside the cluster got no answer (refused, timed out, reset)."""


def node_addr(i: int) -> str:
    return f"10.213.0.{i + 2}"


def node_url(i: int) -> str:
    return f"http://{node_addr(i)}:{PORT}"


def peers_of(i: int, n: int) -> str:
    """ATS_PEERS value for node i of n: every other node's URL, comma-separated."""
    return ",".join(node_url(j) for j in range(n) if j != i)


def ip(*args: str, check: bool = True, timeout: float = CMD_TIMEOUT_S) -> str:
    """Run `ip ARGS` (or `bridge ARGS` when args[0] is "bridge"); its stdout."""
    cmd = list(args) if args[0] == "bridge" else ["ip", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise ClusterError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")
    return r.stdout


def netns_list() -> list[str]:
    return sorted(line.split()[0] for line in ip("netns", "list").splitlines() if line.strip())


@dataclass
class Node:
    index: int
    name: str
    ns: str
    addr: str
    url: str
    data_dir: str
    ifname: str  # the veth inside the node namespace
    hub_if: str  # its peer, a bridge port in the hub namespace
    env: dict[str, str] = field(default_factory=dict)
    origin: str = ""
    size: int = 0  # log size printed on the last ready line
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Cluster:
    """n nodes, each in its own namespace, behind one bridge in a hub namespace."""

    def __init__(self, n: int, *, base_dir: str, env: Mapping[str, str] | None = None, node_env: NodeEnv = None,
                 multicast: bool = False, prefix: str = "ats"):
        if not 1 <= n <= MAX_NODES:
            raise ValueError(f"1..{MAX_NODES} nodes, not {n}")
        taken = set(netns_list())
        while True:
            p = f"{prefix}{os.getpid()}x{next(_SEQ)}"  # prefix: whose namespaces these are
            if not any(name.startswith(p) for name in taken):
                break
        if len(f"{p}h{n - 1}") > 15:
            raise ValueError(f"interface names with prefix {p} exceed 15 characters")
        self.prefix, self.hub, self.bridge = p, f"{p}hub", f"{p}b"
        self.base_dir = os.path.abspath(base_dir)
        self.env = dict(env or {})
        self.multicast = multicast
        self.nodes: list[Node] = []
        for i in range(n):
            extra = node_env(i) if callable(node_env) else (node_env or {}).get(i, {})
            self.nodes.append(Node(i, f"node{i}", f"{p}n{i}", node_addr(i), node_url(i),
                                   os.path.join(self.base_dir, f"node{i}"), f"{p}v{i}", f"{p}h{i}", dict(extra)))
        self._made_ns: list[str] = []
        self._cuts: set[frozenset[int]] = set()
        self._down = False

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> "Cluster":
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.teardown()

    def up(self, *, start: bool = True) -> "Cluster":
        """Create namespaces and links, then (unless start=False) start every node."""
        _LIVE.add(self)
        try:
            os.makedirs(self.base_dir, exist_ok=True)
            self._wire()
            if start:
                self._start_many(range(len(self.nodes)))
        except BaseException:
            self.teardown()
            raise
        return self

    def _add_ns(self, ns: str) -> None:
        ip("netns", "add", ns)
        self._made_ns.append(ns)
        ip("netns", "exec", ns, "sysctl", "-q", "-e", "-w",
           "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
        ip("-n", ns, "link", "set", "lo", "up")

    def _wire(self) -> None:
        h, br, p = self.hub, self.bridge, self.prefix
        self._add_ns(h)
        ip("-n", h, "link", "add", br, "up", "type", "bridge")
        ip("-n", h, "addr", "add", f"{HUB_ADDR}/{PREFIX_LEN}", "dev", br)
        ip("-n", h, "link", "add", f"{p}s", "master", br, "up", "type", "veth", "peer", "name", f"{p}t")
        ip("-n", h, "link", "set", f"{p}t", "up")
        ip("bridge", "-n", h, "fdb", "add", SINK_MAC, "dev", f"{p}s", "master", "static")
        for node in self.nodes:
            self._add_ns(node.ns)
            ip("-n", h, "link", "add", node.hub_if, "master", br, "up", "type", "veth", "peer", "name", node.ifname,
               "netns", node.ns)
            ip("bridge", "-n", h, "link", "set", "dev", node.hub_if, "mcast_flood", "on" if self.multicast else "off")
            ip("-n", node.ns, "addr", "add", f"{node.addr}/{PREFIX_LEN}", "dev", node.ifname)
            ip("-n", node.ns, "link", "set", node.ifname, "up")

    def teardown(self) -> None:
        """Kill every node and delete every namespace this cluster made. Idempotent."""
        if self._down:
            return
        self._down = True
        errors = []
        for node in self.nodes:
            try:
                self.kill(node.index)
            except Exception as e:  # keep going: the namespaces must go whatever happens
                errors.append(f"kill {node.name}: {e}")
        for ns in reversed(self._made_ns):
            try:
                for pid in ip("netns", "pids", ns, check=False).split():
                    try:
                        os.kill(int(pid), signal.SIGKILL)  # inside our namespace, so ours
                    except ProcessLookupError:
                        pass
                ip("netns", "del", ns)
            except Exception as e:
                errors.append(f"netns del {ns}: {e}")
        self._made_ns.clear()
        _LIVE.discard(self)
        if errors:
            raise ClusterError("teardown incomplete: " + "; ".join(errors))

    # -- nodes -------------------------------------------------------------------------------

    def start(self, i: int, *, env: Mapping[str, str] | None = None) -> Node:
        """Start node i (env replaces its per-node env when given); waits for its ready line."""
        if env is not None:
            self.nodes[i].env = dict(env)
        self._start_many([i])
        return self.nodes[i]

    def restart(self, i: int, sig: int = signal.SIGKILL, *, env: Mapping[str, str] | None = None) -> Node:
        self.kill(i, sig)
        return self.start(i, env=env)

    def kill(self, i: int, sig: int = signal.SIGKILL, timeout: float = 15.0) -> int | None:
        """Send sig to node i and wait for it to exit (SIGKILL after timeout); its exit code."""
        node = self.nodes[i]
        proc, node.proc = node.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        return proc.returncode

    def stop(self, i: int) -> int | None:
        """SIGTERM: a clean shutdown."""
        return self.kill(i, signal.SIGTERM)

    def _start_many(self, indices) -> None:
        pending = {}
        for i in indices:
            node = self.nodes[i]
            if node.running:
                raise ClusterError(f"{node.name} is already running")
            os.makedirs(os.path.dirname(node.data_dir), exist_ok=True)
            out_path = node.data_dir + ".stdout"
            offset = os.path.getsize(out_path) if os.path.exists(out_path) else 0
            env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env, **node.env}
            cmd = ["ip", "netns", "exec", node.ns, sys.executable, "-m", "node", "node", "--data-dir", node.data_dir,
                   "--host", node.addr, "--port", str(PORT)]
            with open(out_path, "ab") as out, open(node.data_dir + ".stderr", "ab") as err:
                # own session: a terminal's Ctrl-C reaches us, and we tear the nodes down in order
                node.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
                                             cwd=REPO, start_new_session=True)
            pending[i] = (out_path, offset)
        deadline = time.monotonic() + START_TIMEOUT_S
        while pending:
            for i, (out_path, offset) in list(pending.items()):
                node = self.nodes[i]
                with open(out_path, "rb") as f:
                    f.seek(offset)
                    m = READY_RE.search(f.read().decode(errors="replace"))
                if m:
                    node.origin, node.size = m.group(2), int(m.group(3))
                    del pending[i]
                elif node.proc is not None and node.proc.poll() is not None:
                    raise ClusterError(f"{node.name} exited with {node.proc.returncode} before ready:\n{self.log(i)}")
            if pending and time.monotonic() > deadline:
                raise ClusterError(f"nodes {sorted(pending)} not ready in {START_TIMEOUT_S}s:\n"
                                   + "\n".join(self.log(i) for i in pending))
            if pending:
                time.sleep(0.05)

    def log(self, i: int, chars: int = 4000) -> str:
        """The tail of node i's stderr."""
        try:
            with open(self.nodes[i].data_dir + ".stderr", errors="replace") as f:
                return f.read()[-chars:]
        except OSError:
            return ""

    # -- links -------------------------------------------------------------------------------

    @property
    def cuts(self) -> list[tuple[int, int]]:
        return sorted(tuple(sorted(pair)) for pair in self._cuts)  # type: ignore[misc]

    def cut(self, i: int, j: int) -> None:
        """Drop every packet between node i and node j, both directions."""
        self._apply(self._cuts | {self._pair(i, j)})

    def heal(self, i: int, j: int) -> None:
        self._apply(self._cuts - {self._pair(i, j)})

    def isolate(self, i: int) -> None:
        """Cut node i from every other node (the hub still reaches it)."""
        self._apply(self._cuts | {self._pair(i, j) for j in range(len(self.nodes)) if j != i})

    def rejoin(self, i: int) -> None:
        self._apply({pair for pair in self._cuts if i not in pair})

    def partition(self, groups: list[list[int]]) -> None:
        """Exactly these groups: nodes in different groups are cut, others healed.

        Nodes not named in any group are each a group of their own."""
        group: dict[int, int] = {}
        for g, members in enumerate(groups):
            for i in members:
                if i in group or not 0 <= i < len(self.nodes):
                    raise ValueError(f"node {i} repeated or out of range in {groups}")
                group[i] = g
        for i in range(len(self.nodes)):
            group.setdefault(i, -1 - i)
        n = len(self.nodes)
        self._apply({frozenset((i, j)) for i in range(n) for j in range(i + 1, n) if group[i] != group[j]})

    def heal_all(self) -> None:
        self._apply(set())

    def _pair(self, i: int, j: int) -> frozenset[int]:
        if i == j or not (0 <= i < len(self.nodes) and 0 <= j < len(self.nodes)):
            raise ValueError(f"not a pair of distinct nodes: {i}, {j}")
        return frozenset((i, j))

    def _apply(self, want: set[frozenset[int]]) -> None:
        for pair in self._cuts - want:
            self._neigh(pair, cut=False)
            self._cuts.discard(pair)
        for pair in want - self._cuts:
            self._neigh(pair, cut=True)
            self._cuts.add(pair)

    def _neigh(self, pair: frozenset[int], *, cut: bool) -> None:
        i, j = sorted(pair)
        for a, b in ((self.nodes[i], self.nodes[j]), (self.nodes[j], self.nodes[i])):
            if cut:
                ip("-n", a.ns, "neigh", "replace", b.addr, "lladdr", SINK_MAC, "dev", a.ifname, "nud", "permanent")
            else:
                ip("-n", a.ns, "neigh", "del", b.addr, "dev", a.ifname, check=False)

    # -- traffic -----------------------------------------------------------------------------

    def request(self, i: int, method: str, path: str, body: bytes | None = None,
                headers: Mapping[str, str] | None = None, *, via: int | None = None,
                timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
        """HTTP request to node i, sent from the hub namespace (or from node `via`'s namespace).

        Returns (status, lower-cased headers, body); raises Unreachable when no answer came."""
        src = self.hub if via is None else self.nodes[via].ns
        job = {"host": self.nodes[i].addr, "port": PORT, "method": method, "path": path, "timeout": timeout,
               "headers": dict(headers or {}), "body": None if body is None else base64.b64encode(body).decode()}
        try:
            r = subprocess.run(["ip", "netns", "exec", src, sys.executable, "-I", "-c", _CLIENT],
                               input=json.dumps(job), capture_output=True, text=True, timeout=timeout + 15)
        except subprocess.TimeoutExpired as e:
            raise Unreachable(f"request to node {i} hung past {timeout + 15}s") from e
        if r.returncode != 0:
            raise ClusterError(f"request helper failed: {r.stderr.strip()}")
        out = json.loads(r.stdout)
        if "error" in out:
            raise Unreachable(f"{method} {self.nodes[i].url}{path} from {src}: {out['error']}")
        return out["status"], {k.lower(): v for k, v in out["headers"]}, base64.b64decode(out["body"])

    def counters(self, i: int) -> tuple[int, int]:
        """(rx_bytes, tx_bytes) of node i's interface, as seen inside its namespace."""
        node = self.nodes[i]
        stats = f"/sys/class/net/{node.ifname}/statistics"
        rx, tx = ip("netns", "exec", node.ns, "cat", f"{stats}/rx_bytes", f"{stats}/tx_bytes").split()
        return int(rx), int(tx)


_CLIENT = r"""
import base64, http.client, json, sys
a = json.load(sys.stdin)
try:
    c = http.client.HTTPConnection(a["host"], a["port"], timeout=a["timeout"])
    c.request(a["method"], a["path"], body=None if a["body"] is None else base64.b64decode(a["body"]),
              headers=a["headers"])
    r = c.getresponse()
    out = {"status": r.status, "headers": r.getheaders(), "body": base64.b64encode(r.read()).decode()}
except (OSError, http.client.HTTPException) as e:
    out = {"error": type(e).__name__ + ": " + str(e)}
json.dump(out, sys.stdout)
"""


@atexit.register
def _teardown_live() -> None:
    for c in list(_LIVE):
        try:
            c.teardown()
        except Exception as e:
            print(f"cluster teardown at exit: {e}", file=sys.stderr)


def sweep() -> list[str]:
    """Delete namespaces named ats<pid>x... whose pid is gone (leftovers of killed runs)."""
    gone = []
    for ns in netns_list():
        m = re.match(r"ats(\d+)x\d+(hub|n\d+)$", ns)
        if m and not os.path.exists(f"/proc/{m.group(1)}"):
            for pid in ip("netns", "pids", ns, check=False).split():
                os.kill(int(pid), signal.SIGKILL)
            ip("netns", "del", ns)
            gone.append(ns)
    return gone


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.netns.cluster", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start a cluster, print its URLs, tear down on Ctrl-C")
    up.add_argument("n", type=int)
    up.add_argument("--base-dir", help="data folders (default: a temporary folder, removed on exit)")
    up.add_argument("--env", action="append", default=[], metavar="K=V", help="environment for every node")
    up.add_argument("--peers", action="store_true", help="set ATS_PEERS on each node to all the others")
    up.add_argument("--multicast", action="store_true", help="forward multicast (mDNS) between nodes")
    up.add_argument("--seconds", type=float, default=None, help="tear down after this long")
    sub.add_parser("sweep", help="delete namespaces left by dead runs")
    args = ap.parse_args(argv)
    if args.cmd == "sweep":
        print("\n".join(sweep()) or "nothing to sweep")
        return 0

    def _interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    base = args.base_dir or tempfile.mkdtemp(prefix="ats-netns-")
    env = dict(kv.split("=", 1) for kv in args.env)
    node_env = (lambda i: {"ATS_PEERS": peers_of(i, args.n)}) if args.peers else None
    try:
        with Cluster(args.n, base_dir=base, env=env, node_env=node_env, multicast=args.multicast) as c:
            print(f"hub namespace {c.hub} ({HUB_ADDR}); data in {base}")
            for node in c.nodes:
                print(f"{node.name} {node.url} ns={node.ns} origin={node.origin}")
            print(f"e.g.: ip netns exec {c.hub} curl {c.nodes[0].url}/healthz   (Ctrl-C to tear down)", flush=True)
            end = time.monotonic() + args.seconds if args.seconds else None
            while end is None or time.monotonic() < end:
                time.sleep(0.5 if end is None else max(0.0, min(0.5, end - time.monotonic())))
    except KeyboardInterrupt:
        pass
    finally:
        if not args.base_dir:
            shutil.rmtree(base, ignore_errors=True)
    print("torn down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
