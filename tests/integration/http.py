"""A tiny synchronous HTTP client for tests (stdlib http.client, real sockets)."""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def code(self) -> str | None:
        try:
            return self.json()["error"]["code"]
        except (ValueError, KeyError, TypeError):
            return None


def request(url: str, method: str, path: str, body: bytes | None = None, content_type: str | None = None,
            headers: dict[str, str] | None = None, timeout_s: float = 30) -> Reply:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
    try:
        h = dict(headers or {})
        if content_type:
            h["Content-Type"] = content_type
        conn.request(method, path, body=body, headers=h)
        resp = conn.getresponse()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def get(url: str, path: str) -> Reply:
    return request(url, "GET", path)


def post_cbor(url: str, path: str, body: bytes) -> Reply:
    return request(url, "POST", path, body, "application/cbor")


def post_json(url: str, path: str, doc: Any) -> Reply:
    return request(url, "POST", path, json.dumps(doc).encode(), "application/json")
