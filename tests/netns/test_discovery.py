"""node/discovery.py: nodes find each other by mDNS/DNS-SD, and bad announcements are ignored.

The `netns` tests run every zeroconf participant inside a network namespace the test creates
(`ats<pid>d`, loopback up with multicast on), as separate processes started with `ip netns exec`;
the namespace is deleted on teardown, also on failure. One test runs in the root namespace, on
127.0.0.1 only, to check that discovery = "loopback" puts nothing on any other interface. The
TXT-parsing and config tests at the top touch no network.

Run as a script (`python -m tests.netns.test_discovery MODE ...`) this module is the helper process
started inside the namespace: MODE is `peer`, `raw`, `query` or `broken`. A helper prints one JSON
object per line and exits cleanly when its stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from ledger.checkpoint import origin_line, verifier_key
from ledger.signing import public_key_from_seed
from node import __version__
from node.config import Config, validate
from node.discovery import (
    PROTO,
    SERVICE_TYPE,
    Discovery,
    MalformedAnnouncement,
    PeerInfo,
    discovery_from_config,
    parse_txt,
    peer_from_announcement,
)

ROOT = Path(__file__).resolve().parents[2]
FIND_S = 10  # bound on "the other node is found"
LOST_S = 8  # bound on "the goodbye is seen"
netns = pytest.mark.netns


def _keys(seed: bytes) -> tuple[bytes, str]:
    pk = public_key_from_seed(seed)
    return pk, verifier_key(origin_line(pk), pk)


def _txt(seed: bytes, **override: str | None) -> dict[bytes, bytes | None]:
    """A valid ats/1 TXT record for the key of `seed`, with fields replaced (None: removed)."""
    pk, vkey = _keys(seed)
    fields: dict[str, str | None] = {"pk": pk.hex(), "vkey": vkey, "port": "8470", "v": __version__, "proto": PROTO}
    fields.update(override)
    return {k.encode(): v.encode() for k, v in fields.items() if v is not None}


SEED_A, SEED_B = bytes(range(32)), bytes(range(1, 33))
_, VKEY_B = _keys(SEED_B)
# Each bad announcement (instance label, TXT overrides, seed) and the reason it must be refused.
MALFORMED: dict[str, tuple[dict[str, str | None], str]] = {
    "bad-hex": ({"pk": "zz" * 32}, "pk is not 64 lowercase hex digits"),
    "short-pk": ({"pk": "ab" * 31}, "pk is not 64 lowercase hex digits"),
    "upper-hex": ({"pk": public_key_from_seed(SEED_A).hex().upper()}, "pk is not 64 lowercase hex digits"),
    "unknown-proto": ({"proto": "ats/9"}, "unknown proto"),
    "no-proto": ({"proto": None}, "no proto"),
    "vkey-of-another-key": ({"vkey": VKEY_B}, "vkey is not the verifier key of pk"),
    "vkey-garbage": ({"vkey": "not-a-vkey"}, "vkey: malformed verifier key"),
    "port-zero": ({"port": "0"}, "port is not 1..65535"),
    "port-words": ({"port": "http"}, "port is not 1..65535"),
    "no-version": ({"v": None}, "no v"),
    "long-version": ({"v": "9" * 33}, "v is longer than"),
}


# --- pure: TXT parsing, addresses, settings (no network) --------------------------------------


def test_valid_txt_record_parses_to_key_vkey_port_and_version() -> None:
    pk, vkey = _keys(SEED_A)
    assert parse_txt(_txt(SEED_A)) == (pk, vkey, 8470, __version__)


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_txt_record_is_refused_with_its_reason(case: str) -> None:
    override, reason = MALFORMED[case]
    with pytest.raises(MalformedAnnouncement, match=reason):
        parse_txt(_txt(SEED_A, **override))


def test_txt_values_that_are_not_printable_ascii_are_refused() -> None:
    for value in (b"\xff" * 4, b"1.0\n", "é".encode()):
        with pytest.raises(MalformedAnnouncement):
            parse_txt({**_txt(SEED_A), b"v": value})
    with pytest.raises(MalformedAnnouncement, match="no v"):
        parse_txt({**_txt(SEED_A), b"v": None})  # a key without "=" (RFC 6763 §6.4)


def test_announcement_gives_sorted_urls_of_its_usable_ipv4_addresses() -> None:
    pk, vkey = _keys(SEED_A)
    peer = peer_from_announcement(pk.hex()[:16], _txt(SEED_A, port="9001"),
                                  ["127.0.0.2", "0.0.0.0", "224.0.0.251", "fe80::1", "127.0.0.1", "127.0.0.2"])
    assert peer == PeerInfo(pk, vkey, ["http://127.0.0.1:9001", "http://127.0.0.2:9001"], __version__)


def test_announcement_under_another_keys_instance_name_or_without_address_is_refused() -> None:
    pk_b, _ = _keys(SEED_B)
    with pytest.raises(MalformedAnnouncement, match="instance name"):
        peer_from_announcement(pk_b.hex()[:16], _txt(SEED_A), ["127.0.0.1"])
    with pytest.raises(MalformedAnnouncement, match="no usable IPv4 address"):
        peer_from_announcement(public_key_from_seed(SEED_A).hex()[:16], _txt(SEED_A), ["0.0.0.0"])


def test_discovery_refuses_wildcard_or_missing_interfaces() -> None:
    pk, vkey = _keys(SEED_A)
    for interfaces in ([], ["0.0.0.0"], ["224.0.0.251"], ["eth0"]):
        with pytest.raises(ValueError):
            Discovery(pk, vkey, __version__, ["127.0.0.1"], 8470, interfaces, lambda p: None, None)


def test_discovery_settings_default_to_loopback_and_are_validated() -> None:
    assert (Config().discovery, Config().discovery_interfaces) == ("loopback", ())
    assert validate(Config(discovery="lan")) == ["discovery must be loopback, interfaces or off"]
    assert validate(Config(discovery="interfaces")) == [
        "discovery_interfaces must list at least one IPv4 address when discovery is interfaces"]
    assert validate(Config(discovery="interfaces", discovery_interfaces=("10.1.2.3", "0.0.0.0", "eth0"))) == [
        "discovery_interfaces: 0.0.0.0 is not the address of one interface",
        "discovery_interfaces: 'eth0' is not an IPv4 address",
    ]


def test_discovery_from_config_uses_loopback_by_default_and_none_when_off() -> None:
    pk, vkey = _keys(SEED_A)
    assert discovery_from_config(Config(discovery="off"), pk, vkey, 8470, lambda p: None) is None
    d = discovery_from_config(Config(), pk, vkey, 8470, lambda p: None)
    assert d is not None and d._interfaces == ["127.0.0.1"] and d.name == f"{pk.hex()[:16]}.{SERVICE_TYPE}"
    d = discovery_from_config(Config(discovery="interfaces", discovery_interfaces=("10.9.0.2",), listen_host="0.0.0.0"),
                              pk, vkey, 8470, lambda p: None)
    assert d is not None and d._interfaces == ["10.9.0.2"]


# --- the namespace and the helper processes ----------------------------------------------------


def _run(*cmd: str) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")


def _require_root_and_ip() -> None:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.fail("discovery netns tests need root and iproute2's `ip` (CI runs as root)", pytrace=False)


@pytest.fixture(scope="module")
def namespace():
    """A network namespace whose loopback is up, multicast-capable and routes 224.0.0.0/4."""
    _require_root_and_ip()
    name = f"ats{os.getpid()}d"
    _run("ip", "netns", "add", name)
    try:
        for cmd in (("ip", "link", "set", "lo", "up"), ("ip", "link", "set", "lo", "multicast", "on"),
                    ("ip", "route", "add", "224.0.0.0/4", "dev", "lo")):
            _run("ip", "netns", "exec", name, *cmd)
        yield name
    finally:
        # Only our helpers live in this namespace; end any that outlived its test, by pid.
        pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, timeout=10).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), 9)
            except (ProcessLookupError, ValueError):
                pass
        _run("ip", "netns", "del", name)


class Helper:
    """This module run as a script inside the namespace; its JSON lines arrive on a queue."""

    def __init__(self, ns: str, *args: str) -> None:
        self.events: list[dict[str, Any]] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "tests.netns.test_discovery", *args],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._stderr_text: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        threading.Thread(target=self._drain_stderr, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr_text.append(line)

    def expect(self, pred: Callable[[dict[str, Any]], bool], timeout_s: float, what: str) -> dict[str, Any]:
        """The first event (seen before or arriving within timeout_s) for which pred holds."""
        for event in self.events:
            if pred(event):
                return event
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            event = json.loads(line)
            self.events.append(event)
            if pred(event):
                return event
        raise AssertionError(f"no {what} within {timeout_s} s; events: {self.events}; "
                             f"stderr: {''.join(self._stderr_text)[-3000:]}")

    def drain(self, seconds: float) -> None:
        """Collect the events that arrive within `seconds`."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                return
            if line is None:
                return
            self.events.append(json.loads(line))

    def stop(self, timeout_s: float = 10) -> int:
        """Close stdin (the helper then closes cleanly) and wait; kill if it does not exit in time."""
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
                self.proc.wait(timeout=timeout_s)
            except (subprocess.TimeoutExpired, BrokenPipeError):
                self.proc.kill()
                self.proc.wait(timeout=5)
        return self.proc.returncode


@pytest.fixture
def helpers(namespace):
    """helpers(*args) -> a started Helper in the namespace; all are stopped after the test."""
    made: list[Helper] = []

    def start(*args: str) -> Helper:
        made.append(Helper(namespace, *args))
        return made[-1]

    yield start
    for h in made:
        h.stop(timeout_s=5)


def _peer(helpers, seed: bytes, port: int, addrs: str = "127.0.0.1") -> tuple[Helper, dict[str, Any]]:
    h = helpers("peer", "--seed", seed.hex(), "--port", str(port), "--addrs", addrs)
    ready = h.expect(lambda e: e["event"] == "ready", FIND_S, "ready line")
    assert ready["started"], h.events
    return h, ready


# --- netns: two processes, malformed announcements, a standard client, goodbyes ----------------


@netns
def test_two_nodes_in_separate_processes_find_each_other_with_keys_vkeys_and_urls(helpers) -> None:
    seed_a, seed_b = os.urandom(32), os.urandom(32)
    a, ready_a = _peer(helpers, seed_a, 7001)
    b, ready_b = _peer(helpers, seed_b, 7002, addrs="127.0.0.1,127.0.0.2")
    seen_by_a = a.expect(lambda e: e["event"] == "peer" and e["pk"] == ready_b["pk"], FIND_S, "peer B at A")
    seen_by_b = b.expect(lambda e: e["event"] == "peer" and e["pk"] == ready_a["pk"], FIND_S, "peer A at B")
    assert seen_by_a == {"event": "peer", "pk": ready_b["pk"], "vkey": ready_b["vkey"], "version": __version__,
                         "urls": ["http://127.0.0.1:7002", "http://127.0.0.2:7002"]}
    assert seen_by_b == {"event": "peer", "pk": ready_a["pk"], "vkey": ready_a["vkey"], "version": __version__,
                         "urls": ["http://127.0.0.1:7001"]}
    assert ready_a["vkey"] == _keys(seed_a)[1]
    for h, ready in ((a, ready_a), (b, ready_b)):
        assert not [e for e in h.events if e["event"] == "peer" and e["pk"] == ready["pk"]], "a node found itself"


@netns
def test_malformed_announcements_are_ignored_and_logged_once_each(helpers) -> None:
    raw = helpers("raw")
    names = raw.expect(lambda e: e["event"] == "ready", FIND_S, "raw announcements")["names"]
    a, _ = _peer(helpers, os.urandom(32), 7003)
    good, ready_good = _peer(helpers, os.urandom(32), 7004)
    a.expect(lambda e: e["event"] == "peer" and e["pk"] == ready_good["pk"], FIND_S, "the good peer")
    for name, reason in names.items():
        a.expect(lambda e: e["event"] == "log" and name in e["msg"] and reason in e["msg"], FIND_S,
                 f"a warning for {name} ({reason})")
    a.drain(2.0)  # re-announcements arrive meanwhile; none may be reported or logged again
    peers = [e["pk"] for e in a.events if e["event"] == "peer"]
    assert peers == [ready_good["pk"]]
    for name in names:
        assert len([e for e in a.events if e["event"] == "log" and name in e["msg"]]) == 1, name


@netns
def test_a_one_shot_dns_sd_query_from_dnspython_sees_the_node(helpers) -> None:
    pytest.importorskip("dns", reason="dnspython is the independent DNS-SD client of this test")
    a, ready = _peer(helpers, os.urandom(32), 7005)
    instance = f"{ready['pk'][:16]}.{SERVICE_TYPE}"
    q = helpers("query", "--expect", instance)
    answer = q.expect(lambda e: e["event"] == "answer", FIND_S + 2, "a DNS-SD answer")
    assert instance in answer["ptr"]
    assert answer["srv"][instance][1] == 7005
    assert answer["txt"][instance] == {"pk": ready["pk"], "vkey": ready["vkey"], "port": "7005",
                                       "v": __version__, "proto": PROTO}
    assert answer["a"][answer["srv"][instance][0]] == ["127.0.0.1"]


@netns
def test_on_lost_fires_when_the_other_process_exits_cleanly(helpers) -> None:
    a, _ = _peer(helpers, os.urandom(32), 7006)
    b, ready_b = _peer(helpers, os.urandom(32), 7007)
    a.expect(lambda e: e["event"] == "peer" and e["pk"] == ready_b["pk"], FIND_S, "peer B")
    assert b.stop() == 0
    assert b.expect(lambda e: e["event"] == "closed", 1, "B's clean close")
    a.expect(lambda e: e["event"] == "lost" and e["pk"] == ready_b["pk"], LOST_S, "B lost")


@netns
def test_start_warns_once_and_carries_on_when_mdns_cannot_run(helpers) -> None:
    h = helpers("broken")
    result = h.expect(lambda e: e["event"] == "result", FIND_S, "results")
    warnings = [e["msg"] for e in h.events if e["event"] == "log" and e["level"] == "WARNING"]
    # An address not assigned in the namespace: python-zeroconf opens no sender.
    assert result["unassigned"] is False
    assert any("discovery is off" in w and "10.255.255.1" in w for w in warnings), warnings
    # Port 5353 held by a socket without SO_REUSEPORT: bind fails with EADDRINUSE.
    assert result["port_taken"] is False
    assert sum("discovery is off" in w and "127.0.0.1" in w for w in warnings) == 1, warnings


# --- root namespace: loopback discovery sends nothing on other interfaces ----------------------

ETH_P_ALL = 0x0003
SO_RCVBUFFORCE = 33  # <asm-generic/socket.h>; the socket module does not export it
IFF_UP = 0x1


def _mdns_frames(sock: socket.socket) -> list[str]:
    """Drain a packet socket; describe each frame that is IPv4/IPv6 UDP to or from port 5353."""
    found = []
    while True:
        try:
            frame, (ifname, _, _, hatype, _) = sock.recvfrom(65535)
        except BlockingIOError:
            return found
        if hatype in (1, 772):  # ARPHRD_ETHER, ARPHRD_LOOPBACK: the IP packet follows a 14-byte header
            ethertype, ip = int.from_bytes(frame[12:14], "big"), frame[14:]
        else:
            ethertype, ip = (0x0800 if frame[:1] and frame[0] >> 4 == 4 else 0x86DD), frame
        if ethertype == 0x0800 and len(ip) >= 20 and ip[9] == 17:
            udp = ip[(ip[0] & 0x0F) * 4:]
        elif ethertype == 0x86DD and len(ip) >= 48 and ip[6] == 17:
            udp = ip[40:]
        else:
            continue
        if 5353 in (int.from_bytes(udp[0:2], "big"), int.from_bytes(udp[2:4], "big")):
            found.append(f"{ifname}: {len(frame)} bytes")


@netns
async def test_loopback_discovery_in_the_root_namespace_sends_nothing_on_other_interfaces() -> None:
    _require_root_and_ip()
    others = [i for i in sorted(os.listdir("/sys/class/net")) if i != "lo"
              and int(Path(f"/sys/class/net/{i}/flags").read_text(), 16) & IFF_UP]
    sniffers = []
    for ifname in ["lo", *others]:  # lo: the control that shows the sniffer sees mDNS at all
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)  # root may pass rmem_max
        s.bind((ifname, 0))
        s.setblocking(False)
        sniffers.append(s)
    found: dict[str, list[PeerInfo]] = {"a": [], "b": []}
    pk_a, vkey_a = _keys(os.urandom(32))
    pk_b, vkey_b = _keys(os.urandom(32))
    a = Discovery(pk_a, vkey_a, __version__, ["127.0.0.1"], 7101, ["127.0.0.1"], found["a"].append)
    b = Discovery(pk_b, vkey_b, __version__, ["127.0.0.1"], 7102, ["127.0.0.1"], found["b"].append)
    try:
        assert await a.start() and await b.start()
        igmp = Path("/proc/net/igmp").read_text()
        async with asyncio.timeout(FIND_S):
            while not ([p for p in found["a"] if p.public_key == pk_b] and [p for p in found["b"] if p.public_key == pk_a]):
                await asyncio.sleep(0.1)
    finally:
        await a.close()
        await b.close()
        frames = [f for s in sniffers for f in _mdns_frames(s)]
        on_lo = [f for f in frames if f.startswith("lo:")]
        frames = [f for f in frames if not f.startswith("lo:")]
        for s in sniffers:
            s.close()
    # 224.0.0.251 is "FB0000E0" in /proc/net/igmp: joined on lo, and on no other device.
    groups_by_device, device = {}, None
    for line in igmp.splitlines()[1:]:
        if not line.startswith("\t"):
            device = line.split()[1]
        else:
            groups_by_device.setdefault(device, []).append(line.split()[0])
    assert "FB0000E0" in groups_by_device.get("lo", [])
    assert [d for d, groups in groups_by_device.items() if d != "lo" and "FB0000E0" in groups] == []
    assert on_lo, "the sniffer saw no mDNS on lo, so its silence elsewhere proves nothing"
    assert frames == [], f"mDNS left the host on {frames}"


# --- the helper process ------------------------------------------------------------------------


def _emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


class _EmitLogs(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        _emit("log", level=record.levelname, msg=record.getMessage())


async def _stdin_closed() -> None:
    """Wait until the test closes our stdin."""
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while await reader.readline():
            pass
    finally:
        transport.close()


async def _helper_peer(args: argparse.Namespace) -> None:
    pk, vkey = _keys(bytes.fromhex(args.seed))
    d = Discovery(
        pk, vkey, __version__, args.addrs.split(","), args.port, ["127.0.0.1"],
        on_peer=lambda p: _emit("peer", pk=p.public_key.hex(), vkey=p.vkey, urls=p.urls, version=p.version),
        on_lost=lambda pk_hex: _emit("lost", pk=pk_hex),
    )
    started = await d.start()
    _emit("ready", started=started, pk=pk.hex(), vkey=vkey)
    await _stdin_closed()
    await d.close()
    _emit("closed")


async def _helper_raw(args: argparse.Namespace) -> None:
    """Announce every MALFORMED case with python-zeroconf's own ServiceInfo, as a faulty node would."""
    from zeroconf import IPVersion
    from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

    azc = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    names = {}
    cases = {**MALFORMED, "wrong-instance": ({}, "instance name is not the first 16 hex digits of pk")}
    for i, (case, (override, reason)) in enumerate(sorted(cases.items())):
        seed = bytes([i + 100]) * 32
        # Named as a good node would be, so that only the flaw under test is wrong; the key of
        # "wrong-instance" announces itself under a name that belongs to no key of its own.
        instance = "0123456789abcdef" if case == "wrong-instance" else public_key_from_seed(seed).hex()[:16]
        txt = _txt(seed, **override)
        info = AsyncServiceInfo(SERVICE_TYPE, f"{instance}.{SERVICE_TYPE}", port=7999, properties=txt,
                                server=f"bad-{i}.local.", addresses=[socket.inet_aton("127.0.0.1")])
        await azc.async_register_service(info, cooperating_responders=True)
        names[f"{instance}.{SERVICE_TYPE}"] = reason
    _emit("ready", names=names)
    await _stdin_closed()
    await azc.async_close()


async def _helper_query(args: argparse.Namespace) -> None:
    """RFC 6762 §5.1 one-shot queries: dnspython builds and parses, a plain UDP socket carries them."""
    import dns.message
    import dns.rdatatype
    import dns.rdtypes.ANY.NSEC as nsec

    def nsec_from_wire(cls, rdclass, rdtype, parser, origin=None):  # type: ignore[no-untyped-def]
        # RFC 6762 §18.14: mDNS compresses the NSEC next-domain name too; dnspython keeps
        # RFC 3597's rule (no compression there) and would refuse python-zeroconf's answers.
        return cls(rdclass, rdtype, parser.get_name(origin, decompress=True), nsec.Bitmap.from_wire_parser(parser))

    nsec.NSEC.from_wire_parser = classmethod(nsec_from_wire)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
    sock.bind(("127.0.0.1", 0))  # not port 5353: responders answer a legacy query by unicast (§6.7)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    answer: dict[str, Any] = {"ptr": [], "srv": {}, "txt": {}, "a": {}}
    deadline = loop.time() + FIND_S
    while loop.time() < deadline and args.expect not in answer["srv"]:
        query = dns.message.make_query(SERVICE_TYPE, dns.rdatatype.PTR)
        sock.sendto(query.to_wire(), ("224.0.0.251", 5353))
        try:
            async with asyncio.timeout(1.0):
                while args.expect not in answer["srv"]:
                    data = await loop.sock_recv(sock, 9000)
                    _collect(dns.message.from_wire(data), answer)
        except TimeoutError:
            pass
    sock.close()
    _emit("answer", **answer)


def _collect(msg: Any, answer: dict[str, Any]) -> None:
    import dns.rdatatype

    for rrset in msg.answer + msg.additional:
        name = rrset.name.to_text()
        for rd in rrset:
            if rrset.rdtype == dns.rdatatype.PTR:
                answer["ptr"].append(rd.target.to_text())
            elif rrset.rdtype == dns.rdatatype.SRV:
                answer["srv"][name] = [rd.target.to_text(), rd.port]
            elif rrset.rdtype == dns.rdatatype.TXT:
                answer["txt"][name] = dict(s.decode().split("=", 1) for s in rd.strings)
            elif rrset.rdtype == dns.rdatatype.A:
                answer["a"].setdefault(name, []).append(rd.address)


async def _helper_broken(args: argparse.Namespace) -> None:
    """Discovery where mDNS cannot run: start() must return False after one warning, not raise."""
    pk, vkey = _keys(os.urandom(32))
    d = Discovery(pk, vkey, __version__, ["127.0.0.1"], 7201, ["10.255.255.1"], lambda p: None)
    unassigned = await d.start()
    await d.close()
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # no SO_REUSEADDR/SO_REUSEPORT
    holder.bind(("0.0.0.0", 5353))
    d = Discovery(pk, vkey, __version__, ["127.0.0.1"], 7201, ["127.0.0.1"], lambda p: None)
    port_taken = await d.start()
    await d.close()
    holder.close()
    _emit("result", unassigned=unassigned, port_taken=port_taken)


def _main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["peer", "raw", "query", "broken"])
    p.add_argument("--seed")
    p.add_argument("--port", type=int)
    p.add_argument("--addrs", default="127.0.0.1")
    p.add_argument("--expect")
    args = p.parse_args()
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    discovery_log = logging.getLogger("ats.discovery")
    discovery_log.setLevel(logging.INFO)
    discovery_log.addHandler(_EmitLogs())
    discovery_log.propagate = False
    asyncio.run(globals()[f"_helper_{args.mode}"](args))


if __name__ == "__main__":
    _main()
