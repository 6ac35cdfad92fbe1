"""TLS: the node's HTTPS server context, and how clients (peers, the SDK, the CLI) verify a node.

A client verifies a node's certificate one of two ways:
- a CA bundle (`tls_ca`, PEM): the usual chain and host-name checks, against that bundle
  (empty: the system's trust store);
- pinned certificates (`tls_pins`): the SHA-256 of the node's leaf certificate (DER) must be
  one of the pins; chain and name are not checked (self-signed certificates, IP addresses).
  `openssl x509 -in cert.pem -noout -fingerprint -sha256` prints a pin (colons are ignored).
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from typing import Any

import aiohttp


class TlsError(Exception):
    """A certificate, key or CA bundle that cannot be used; the message says which and why."""


def parse_pin(text: str) -> bytes:
    """A pin as 32 bytes, from 64 hex digits with or without colons (openssl's form); raises ValueError."""
    digits = text.replace(":", "").strip().lower()
    if len(digits) != 64 or any(c not in "0123456789abcdef" for c in digits):
        raise ValueError(f"{text!r} is not a SHA-256 fingerprint (64 hex digits, colons allowed)")
    return bytes.fromhex(digits)


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """An HTTPS server context for cert_file (PEM chain) and key_file (PEM); raises TlsError."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    for what, path in (("tls_cert", cert_file), ("tls_key", key_file)):
        try:
            with open(path, "rb") as f:
                head = f.read(65536)
        except OSError as e:
            raise TlsError(f"{what} {path}: {e.strerror}") from None
        if b"-----BEGIN " not in head:
            raise TlsError(f"{what} {path} is not a PEM file")
    try:
        ctx.load_cert_chain(cert_file, key_file)
    except ssl.SSLError as e:
        reason = e.reason or str(e)
        if "KEY_VALUES_MISMATCH" in reason:
            raise TlsError(f"tls_key {key_file} is not the key of tls_cert {cert_file}") from None
        raise TlsError(f"tls_cert {cert_file} / tls_key {key_file} cannot be used: {reason}") from None
    except OSError as e:
        raise TlsError(f"tls_cert {cert_file} / tls_key {key_file}: {e}") from None
    return ctx


class PinnedCertificates(aiohttp.Fingerprint):
    """aiohttp's Fingerprint check, against a set of SHA-256 pins instead of one."""

    def __init__(self, pins: frozenset[bytes]):
        super().__init__(next(iter(pins)))
        self.pins = pins

    def check(self, transport: asyncio.Transport) -> None:
        if not transport.get_extra_info("sslcontext"):
            return  # plain http: nothing to check (the URL's scheme is the operator's choice)
        sslobj = transport.get_extra_info("ssl_object")
        cert = sslobj.getpeercert(binary_form=True)
        got = hashlib.sha256(cert).digest()
        if got not in self.pins:
            raise aiohttp.ServerFingerprintMismatch(next(iter(self.pins)), got, *transport.get_extra_info("peername")[:2])


ClientSsl = aiohttp.Fingerprint | ssl.SSLContext | None  # aiohttp's `ssl=`: pins, a CA bundle, or system CAs


def client_ssl(ca_file: str = "", pins: tuple[str, ...] = ()) -> ClientSsl:
    """The `ssl=` argument of aiohttp for verifying nodes: pins, a CA bundle, or None (system CAs)."""
    if pins:
        try:
            return PinnedCertificates(frozenset(parse_pin(p) for p in pins))
        except ValueError as e:
            raise TlsError(f"tls_pins: {e}") from None
    if ca_file:
        try:
            return ssl.create_default_context(cafile=ca_file)
        except (OSError, ssl.SSLError) as e:
            raise TlsError(f"tls_ca {ca_file}: {getattr(e, 'strerror', None) or e}") from None
    return None


def connector(ssl_arg: ClientSsl, **options: Any) -> aiohttp.TCPConnector:
    """A TCPConnector verifying with ssl_arg (client_ssl); aiohttp's defaults when None."""
    return aiohttp.TCPConnector(ssl=ssl_arg if ssl_arg is not None else True, **options)
