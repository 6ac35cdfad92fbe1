"""Peer discovery over mDNS/DNS-SD (RFC 6762, RFC 6763): announce this node, find the others.

Theory of operation. A node announces one DNS-SD instance of `SERVICE_TYPE`, named by the first 16
hex digits of its public key, whose TXT record (RFC 6763 §6) carries `pk` (the public key, hex),
`vkey` (its signed-note verifier key), `port` (the HTTP API port), `v` (the software version) and
`proto` ("ats/1"). It browses the same type; for every other instance it resolves SRV/TXT/A with
`AsyncServiceInfo`, checks the TXT record, and calls `on_peer(PeerInfo)`; when the instance says
goodbye or expires it calls `on_lost(public key hex)`. Everything runs on the node's event loop.

Announcements are untrusted input (STYLE P6): every field is bounded and checked, the vkey must
carry the same key as `pk`, and a malformed one is ignored and logged once per instance name, with
a bounded memory of names. A found peer is only a candidate: replication still checks its
signatures.

Where it runs (STYLE P7): only on the IPv4 addresses in `interfaces`, never on
`InterfaceChoice.All`/`Default`. The default setting, discovery = "loopback", uses 127.0.0.1 only,
so a node never multicasts on the host's networks unless its owner opts in with
discovery = "interfaces" — as Serf only searches the LAN when given `-discover`. python-zeroconf
joins 224.0.0.251 and sends with IP_MULTICAST_IF on exactly those addresses; its shared receive
socket is bound to 0.0.0.0:5353, but only receives multicast for the groups joined.

Loopback in the root namespace: `lo` there usually has no MULTICAST flag and no multicast route.
On Linux this does not matter: with IP_MULTICAST_IF = 127.0.0.1 the kernel delivers the packets
to every socket of the host that joined the group on `lo`, so nodes of one host find each other
(checked on Linux 6.18 and in tests/netns/test_discovery.py). What does fail is a `lo` that is
down (ENODEV on IP_ADD_MEMBERSHIP), an address that is not assigned (EADDRNOTAVAIL: python-zeroconf
then opens no sender), or port 5353 held by a responder without SO_REUSEPORT (EADDRINUSE). In
each case `start()` logs one warning and the node runs on without discovery.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Mapping

from zeroconf import Error as ZeroconfError
from zeroconf import IPVersion, ServiceStateChange
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from ledger.checkpoint import origin_line, parse_verifier_key
from ledger.errors import LedgerError

if TYPE_CHECKING:
    from aiohttp import web

    from node.config import Config

logger = logging.getLogger("ats.discovery")

SERVICE_TYPE = "_ats-ledger._tcp.local."
PROTO = "ats/1"
LOOPBACK = "127.0.0.1"

INSTANCE_HEX_DIGITS = 16
PUBLIC_KEY_BYTES = 32
VKEY_CHARS_MAX = 200  # "ats-ledger/" + 64 hex + "+" + 8 hex + "+" + 44 base64 is 128
VERSION_CHARS_MAX = 32
ADDRESSES_MAX = 8  # URLs kept per peer
PEERS_MAX = 64  # peers (and pending lookups) tracked at once, unless the caller says otherwise
REJECTED_LOGGED_MAX = 64  # instance names remembered so that each malformed one is logged once
LOOKUPS_CONCURRENT = 8
LOOKUP_MS = 3000
LOOKUP_ATTEMPTS = 3
START_S = 5.0
CLOSE_S = 5.0


@dataclass(frozen=True)
class PeerInfo:
    """A node found by discovery: a candidate peer, not yet verified."""

    public_key: bytes
    vkey: str
    urls: list[str]
    version: str


class MalformedAnnouncement(ValueError):
    """An announcement whose TXT record or addresses do not follow `proto` ats/1."""


def _text(properties: Mapping[bytes, bytes | None], key: str, chars_max: int) -> str:
    value = properties.get(key.encode())
    if value is None:
        raise MalformedAnnouncement(f"no {key}")
    if len(value) > chars_max:
        raise MalformedAnnouncement(f"{key} is longer than {chars_max} bytes")
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        raise MalformedAnnouncement(f"{key} is not ASCII") from None
    if not text.isprintable():
        raise MalformedAnnouncement(f"{key} has control characters")
    return text


def parse_txt(properties: Mapping[bytes, bytes | None]) -> tuple[bytes, str, int, str]:
    """(public key, vkey, API port, version) from an ats/1 TXT record; raises MalformedAnnouncement."""
    proto = _text(properties, "proto", VERSION_CHARS_MAX)
    if proto != PROTO:
        raise MalformedAnnouncement(f"unknown proto {proto!r}")
    pk_hex = _text(properties, "pk", 2 * PUBLIC_KEY_BYTES)
    if len(pk_hex) != 2 * PUBLIC_KEY_BYTES or any(c not in "0123456789abcdef" for c in pk_hex):
        raise MalformedAnnouncement("pk is not 64 lowercase hex digits")
    public_key = bytes.fromhex(pk_hex)
    vkey = _text(properties, "vkey", VKEY_CHARS_MAX)
    try:
        name, _, vkey_key = parse_verifier_key(vkey)
    except LedgerError as e:
        raise MalformedAnnouncement(f"vkey: {e.message}") from None
    if vkey_key != public_key or name != origin_line(public_key):
        raise MalformedAnnouncement("vkey is not the verifier key of pk")
    port_text = _text(properties, "port", 5)
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise MalformedAnnouncement("port is not 1..65535")
    version = _text(properties, "v", VERSION_CHARS_MAX)
    if not version:
        raise MalformedAnnouncement("v is empty")
    return public_key, vkey, int(port_text), version


def peer_from_announcement(
    instance: str, properties: Mapping[bytes, bytes | None], addresses: list[str]
) -> PeerInfo:
    """The peer an announcement describes; raises MalformedAnnouncement."""
    public_key, vkey, port, version = parse_txt(properties)
    # One key, one name: an instance may not speak for another node's key.
    if instance != public_key.hex()[:INSTANCE_HEX_DIGITS]:
        raise MalformedAnnouncement("instance name is not the first 16 hex digits of pk")
    usable = []
    for text in addresses:
        try:
            addr = ipaddress.IPv4Address(text)
        except ValueError:
            continue
        if not (addr.is_unspecified or addr.is_multicast or addr == ipaddress.IPv4Address("255.255.255.255")):
            usable.append(str(addr))
    if not usable:
        raise MalformedAnnouncement("no usable IPv4 address")
    urls = sorted(f"http://{a}:{port}" for a in set(usable))[:ADDRESSES_MAX]
    return PeerInfo(public_key, vkey, urls, version)


def _ipv4_list(addresses: list[str], what: str) -> list[str]:
    """The addresses, checked to be specific IPv4 addresses; raises ValueError."""
    out = []
    for text in addresses:
        addr = ipaddress.IPv4Address(text)
        if addr.is_unspecified or addr.is_multicast:
            raise ValueError(f"{what}: {text} is not a specific interface address")
        out.append(str(addr))
    if not out:
        raise ValueError(f"{what}: at least one IPv4 address is needed")
    return out


class Discovery:
    """Announces this node and reports the other nodes found on explicit interfaces."""

    def __init__(
        self,
        public_key: bytes,
        vkey: str,
        version: str,
        host_addresses: list[str],
        port: int,
        interfaces: list[str],
        on_peer: Callable[[PeerInfo], None],
        on_lost: Callable[[str], None] | None = None,
        *,
        peers_max: int = PEERS_MAX,
    ) -> None:
        self._public_key = public_key
        self._interfaces = _ipv4_list(interfaces, "interfaces")
        self._on_peer, self._on_lost = on_peer, on_lost
        self._peers_max = peers_max
        instance = public_key.hex()[:INSTANCE_HEX_DIGITS]
        self.name = f"{instance}.{SERVICE_TYPE}"
        self._info = AsyncServiceInfo(
            SERVICE_TYPE,
            self.name,
            port=port,
            properties={"pk": public_key.hex(), "vkey": vkey, "port": str(port), "v": version, "proto": PROTO},
            server=f"ats-{instance}.local.",
            addresses=[socket.inet_aton(a) for a in _ipv4_list(host_addresses, "host_addresses")],
        )
        self.peers: dict[str, PeerInfo] = {}  # instance name -> peer
        self._azc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._register: asyncio.Task[None] | None = None
        self._lookups: dict[str, asyncio.Task[None]] = {}
        self._lookup_slots = asyncio.Semaphore(LOOKUPS_CONCURRENT)
        self._rejected: set[str] = set()
        self._rejected_full_logged = False
        self.running = False

    async def start(self) -> bool:
        """Open mDNS on the interfaces, browse, and announce in the background.

        Returns False, after one warning, when mDNS cannot run there; never raises for that.
        """
        try:
            self._azc = AsyncZeroconf(interfaces=list(self._interfaces), ip_version=IPVersion.V4Only)
            await self._azc.zeroconf.async_wait_for_start(timeout=START_S)
            if not self._azc.zeroconf.engine.senders:
                raise OSError("no interface accepted the mDNS group (address not assigned here?)")
            self._browser = AsyncServiceBrowser(self._azc.zeroconf, SERVICE_TYPE, handlers=[self._on_change])
        except (OSError, RuntimeError, ValueError, TimeoutError, ZeroconfError) as e:
            logger.warning(
                "discovery is off: cannot run mDNS on %s (%s); the node runs on without it",
                ", ".join(self._interfaces), str(e) or type(e).__name__,
            )
            await self.close()
            return False
        self._register = asyncio.get_running_loop().create_task(self._announce())
        self.running = True
        logger.info("discovery: announcing %s on %s", self.name, ", ".join(self._interfaces))
        return True

    async def _announce(self) -> None:
        assert self._azc is not None
        try:
            # Probing (RFC 6762 §8.1) takes about a second; the announcements follow.
            announced = await self._azc.async_register_service(self._info)
            await announced
        except (OSError, RuntimeError, ValueError, ZeroconfError) as e:
            logger.warning("discovery: cannot announce %s (%s); still looking for peers", self.name, e)

    async def close(self) -> None:
        """Say goodbye, stop browsing and close the sockets; bounded by CLOSE_S."""
        self.running = False
        tasks = list(self._lookups.values()) + ([self._register] if self._register else [])
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._lookups.clear()
        self._register = None
        browser, self._browser = self._browser, None
        azc, self._azc = self._azc, None
        try:
            async with asyncio.timeout(CLOSE_S):
                if browser is not None:
                    await browser.async_cancel()
                if azc is not None:
                    await azc.async_close()  # sends the goodbyes (TTL 0, RFC 6762 §10.1)
        except (OSError, TimeoutError, ZeroconfError) as e:
            logger.warning("discovery: unclean close (%s)", str(e) or type(e).__name__)

    def _on_change(
        self, zeroconf: Any, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        """AsyncServiceBrowser handler: runs on the loop, so it only schedules work."""
        if name == self.name or not self.running:
            return
        if state_change is ServiceStateChange.Removed:
            task = self._lookups.pop(name, None)
            if task is not None:
                task.cancel()
            peer = self.peers.pop(name, None)
            if peer is not None and self._on_lost is not None:
                self._call(self._on_lost, peer.public_key.hex())
            return
        if name in self._lookups:
            return
        if name not in self.peers and len(self.peers) + len(self._lookups) >= self._peers_max:
            self._reject(name, f"peer table full ({self._peers_max})")
            return
        task = asyncio.get_running_loop().create_task(self._resolve(name))
        self._lookups[name] = task
        task.add_done_callback(lambda t: self._lookups.pop(name, None) if self._lookups.get(name) is t else None)

    async def _resolve(self, name: str) -> None:
        assert self._azc is not None
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        # The browser reports a name once: a lookup that times out (a busy host, answers
        # rate-limited by RFC 6762 §6) is retried here, or the peer would never be resolved.
        for _ in range(LOOKUP_ATTEMPTS):
            async with self._lookup_slots:
                if await info.async_request(self._azc.zeroconf, LOOKUP_MS):
                    break
        else:
            logger.info("discovery: %s did not answer %d lookups of %d ms", name, LOOKUP_ATTEMPTS, LOOKUP_MS)
            return
        instance = name[: -len(SERVICE_TYPE) - 1] if name.endswith("." + SERVICE_TYPE) else name
        try:
            peer = peer_from_announcement(instance, info.properties, info.parsed_addresses(IPVersion.V4Only))
        except MalformedAnnouncement as e:
            self._reject(name, str(e))
            return
        if peer.public_key == self._public_key or self.peers.get(name) == peer:
            return
        self.peers[name] = peer
        self._call(self._on_peer, peer)

    def _reject(self, name: str, reason: str) -> None:
        """Log a bad announcement once per name, remembering at most REJECTED_LOGGED_MAX names."""
        if name in self._rejected:
            return
        if len(self._rejected) >= REJECTED_LOGGED_MAX:
            if not self._rejected_full_logged:
                self._rejected_full_logged = True
                logger.warning("discovery: more than %d bad announcements; no longer logging them", REJECTED_LOGGED_MAX)
            return
        self._rejected.add(name)
        logger.warning("discovery: ignoring announcement %s: %s", name, reason)

    @staticmethod
    def _call(callback: Callable[[Any], None], arg: Any) -> None:
        # A failing callback must not break zeroconf's loop-side processing.
        try:
            callback(arg)
        except Exception:
            logger.exception("discovery: callback %r failed", callback)


def context(discovery: Discovery | None) -> Callable[["web.Application"], AsyncIterator[None]]:
    """An aiohttp cleanup_ctx entry that starts discovery before serving and closes it after."""

    async def discovery_ctx(app: "web.Application") -> AsyncIterator[None]:
        if discovery is not None:
            await discovery.start()
        try:
            yield
        finally:
            if discovery is not None:
                await discovery.close()

    return discovery_ctx


def discovery_from_config(
    config: "Config",
    public_key: bytes,
    vkey: str,
    port: int,
    on_peer: Callable[[PeerInfo], None],
    on_lost: Callable[[str], None] | None = None,
) -> Discovery | None:
    """The Discovery the config asks for, or None when discovery = "off"."""
    from node import __version__

    if config.discovery == "off":
        return None
    interfaces = [LOOPBACK] if config.discovery == "loopback" else list(config.discovery_interfaces)
    # Announce the address the API listens on when it is one; a wildcard listener is reachable
    # on the discovery interfaces themselves.
    try:
        listen = ipaddress.IPv4Address(config.listen_host)
        hosts = interfaces if listen.is_unspecified else [str(listen)]
    except ValueError:
        hosts = interfaces
    return Discovery(
        public_key, vkey, __version__, hosts, port, interfaces, on_peer, on_lost,
        peers_max=config.peer_count_max,
    )
