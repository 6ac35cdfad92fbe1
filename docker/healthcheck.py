#!/usr/bin/env python3
"""The container's health check: GET /healthz on the node's own port; exit 0 when it answers 200.

Only the HTTP status counts (the body's details may change): 200 is healthy, anything else
(503 read_only, no answer within 3 s) unhealthy. HTTPS when ATS_TLS_CERT is set; the node's
certificate is not verified here, since this only asks the process next to it whether it is up.
Standard library only: the image needs no curl.
"""

import os
import ssl
import sys
import urllib.error
import urllib.request


def main() -> int:
    port = os.environ.get("ATS_LISTEN_PORT", "8470")
    host = os.environ.get("ATS_LISTEN_HOST", "127.0.0.1")
    host = "127.0.0.1" if host in ("", "0.0.0.0") else ("[::1]" if host == "::" else host)
    host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    tls = bool(os.environ.get("ATS_TLS_CERT"))
    url = f"{'https' if tls else 'http'}://{host}:{port}/healthz"
    context = ssl._create_unverified_context() if tls else None  # noqa: S323 - our own process, by loopback
    try:
        with urllib.request.urlopen(url, timeout=3, context=context) as resp:
            status = resp.status
    except urllib.error.HTTPError as e:
        status = e.code
    except (OSError, ValueError) as e:
        print(f"unhealthy: {url}: {e}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"unhealthy: {url} answered {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
