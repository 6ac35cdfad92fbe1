"""Hostile clients against a real node process (issue 10, classes 6 and 8): slow heads and bodies
are timed out, malformed HTTP gets the contract's JSON, connections are bounded without flooding
the log, a full disk shows in /healthz, and one client's big batches cannot starve another's
single events."""

from __future__ import annotations

import http.client
import json
import os
import socket
import sqlite3
import subprocess
import threading
import time

import pytest

from ledger.events import parse_envelope
from tests.agentkit import TestAgent
from tests.integration.http import get, post_cbor, request
from tests.integration.nodeproc import NodeProcess

WAIT_S = 15


def connect(node: NodeProcess, source: str = "127.0.0.1") -> socket.socket:
    s = socket.create_connection((node.host, node.port), timeout=WAIT_S, source_address=(source, 0))
    return s


def read_reply(s: socket.socket) -> tuple[int, dict, float]:
    """(status, JSON body, seconds until the server closed) of the one answer on s."""
    started = time.monotonic()
    data = b""
    while True:
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, socket.timeout):
            break
        if not chunk:
            break
        data += chunk
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1]) if head.startswith(b"HTTP/1.") else 0
    return status, (json.loads(body) if body else {}), time.monotonic() - started


def log_lines(node: NodeProcess) -> list[str]:
    with open(node.stderr_path) as f:
        return f.read().splitlines()


@pytest.fixture
def quick(tmp_path):
    env = {"ATS_HTTP_HEAD_TIMEOUT_MS": "1000", "ATS_HTTP_BODY_TIMEOUT_MS": "1000", "ATS_CONNECTIONS_PER_CLIENT_MAX": "8",
           "ATS_CONNECTIONS_MAX": "32"}
    node = NodeProcess(str(tmp_path / "node"), env=env).start()
    yield node
    node.kill()


def test_a_slowloris_head_is_closed_within_the_head_timeout(quick):
    s = connect(quick)
    started = time.monotonic()
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    closed_after = None
    for _ in range(40):  # one header byte every 100 ms: the head never completes
        try:
            s.sendall(b"X")
            s.settimeout(0.1)
            if s.recv(1024) == b"":
                closed_after = time.monotonic() - started
                break
        except socket.timeout:
            continue
        except (BrokenPipeError, ConnectionResetError):
            closed_after = time.monotonic() - started
            break
    s.close()
    assert closed_after is not None and closed_after < 3.0, closed_after
    assert get(quick.url, "/healthz").status == 200


def test_a_slow_body_is_answered_408_body_timeout_and_closed(quick):
    s = connect(quick)
    s.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/cbor\r\nContent-Length: 1000\r\n\r\nab")
    status, body, _ = read_reply(s)
    assert (status, body["error"]["code"]) == (408, "body_timeout")


@pytest.mark.parametrize("raw, code", [
    (b"GARBAGE\r\n\r\n", "malformed_http"),
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n", "malformed_http"),
    (b"POST /v1/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "malformed_http"),
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n", "header_too_large"),
    (b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", "header_too_large"),
])
def test_malformed_http_gets_a_json_400_with_a_code_and_no_traceback(quick, raw, code):
    s = connect(quick)
    s.sendall(raw)
    status, body, _ = read_reply(s)
    assert (status, body["error"]["code"]) == (400, code)
    assert get(quick.url, "/healthz").status == 200
    assert "Traceback" not in "\n".join(log_lines(quick))


def test_an_expect_header_gets_a_json_answer_and_100_continue_only_for_a_body_that_would_be_read(quick):
    s = connect(quick)  # an expectation the node does not know: JSON 417, not aiohttp's text/plain one
    s.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nExpect: teapot\r\nContent-Length: 1\r\n"
              b"Connection: close\r\n\r\n\xa0")
    status, body, _ = read_reply(s)
    assert (status, body["error"]["code"]) == (417, "expectation_failed")
    s = connect(quick)  # 100-continue for a body over the endpoint's limit: 413 at once, no invitation to send
    s.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 100000000\r\n"
              b"Content-Type: application/cbor\r\nConnection: close\r\n\r\n")
    status, body, _ = read_reply(s)
    assert (status, body["error"]["code"]) == (413, "body_too_large")
    s = connect(quick)  # 100-continue for a body it reads: 100 Continue, then the answer to the body
    envelope = TestAgent().envelope()
    s.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Type: application/cbor\r\n"
              b"Content-Length: " + str(len(envelope)).encode() + b"\r\nConnection: close\r\n\r\n")
    assert s.recv(64).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    s.sendall(envelope)
    status, body, _ = read_reply(s)
    assert status == 201 and body["status"] == "accepted"


def test_a_client_that_disconnects_mid_body_is_not_logged_as_an_error(quick):
    for _ in range(20):
        s = connect(quick)
        s.sendall(b"POST /v1/events/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/cbor\r\n"
                  b"Content-Length: 100000\r\n\r\n" + b"\x00" * 1000)
        s.close()
    time.sleep(0.3)
    assert get(quick.url, "/healthz").status == 200
    text = "\n".join(log_lines(quick))
    assert "Traceback" not in text and "ERROR" not in text, text[-2000:]


def test_connections_over_the_bounds_get_429_or_503_and_a_flood_does_not_flood_the_log(quick):
    held = [connect(quick) for _ in range(8)]  # the per-client bound, all idle
    try:
        s = connect(quick)
        status, body, _ = read_reply(s)  # this client's bound: it asks too much
        assert (status, body["error"]["code"]) == (429, "too_many_client_connections")
        # another client (address) is still served
        other = connect(quick, "127.0.0.2")
        other.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert read_reply(other)[0] == 200
        before = len(log_lines(quick))
        for _ in range(500):  # a flood of refused connections
            try:
                connect(quick).close()
            except OSError:
                pass
        time.sleep(0.3)
        assert len(log_lines(quick)) - before <= 12
    finally:
        for s in held:
            s.close()
    deadline = time.monotonic() + WAIT_S
    while get(quick.url, "/healthz").status != 200 and time.monotonic() < deadline:
        time.sleep(0.1)


def test_the_nodes_own_connection_bound_is_503_whoever_asks(quick):
    """connections_max (32 here) over four addresses of 8 each: the node is full, so a fifth address,
    which holds nothing, gets 503 too_many_connections (the node's state), not its own 429."""
    held = [connect(quick, f"127.0.0.{2 + i // 8}") for i in range(32)]
    try:
        time.sleep(0.2)  # all counted
        status, body, _ = read_reply(connect(quick, "127.0.0.9"))
        assert (status, body["error"]["code"]) == (503, "too_many_connections")
    finally:
        for s in held:
            s.close()


def test_a_refused_connection_is_answered_at_once_and_held_until_the_client_closes_or_a_second(tmp_path):
    """So a client that reconnects whenever the node closes it (slowloris) reconnects once a second."""
    env = {"ATS_HTTP_HEAD_TIMEOUT_MS": "20000", "ATS_CONNECTIONS_PER_CLIENT_MAX": "2"}
    quick = NodeProcess(str(tmp_path / "node"), env=env).start()
    held = [connect(quick) for _ in range(2)]  # the per-client bound, idle
    try:
        well_behaved = connect(quick)
        status, body, _ = read_reply(well_behaved)  # reads the answer, then closes: nothing is held
        assert (status, body["error"]["code"]) == (429, "too_many_client_connections")
        s = connect(quick)
        s.settimeout(WAIT_S)
        started = time.monotonic()
        first = s.recv(65536)
        answered = time.monotonic() - started
        assert first.startswith(b"HTTP/1.1 429") and b"too_many_client_connections" in first and answered < 0.5
        s.sendall(b"GET /healthz HTTP/1.1\r\n")  # more of a request: not read, not answered
        rest = s.recv(65536)  # the node closes it after REFUSED_HOLD_S
        closed = time.monotonic() - started
        s.close()
        assert rest == b"" and 0.8 <= closed < 5, closed
    finally:
        for c in held:
            c.close()
        quick.kill()


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)], check=True)
    try:
        yield str(mount)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(path: str) -> None:
    with open(path, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass


def test_health_says_writes_fail_on_a_full_disk_and_recovers(small_disk):
    agent = TestAgent()
    env = {"ATS_DISK_FREE_BYTES_MIN": "0", "ATS_LOG_REPEATS_MAX": "2"}
    node = NodeProcess(os.path.join(small_disk, "node"), env=env).start()
    try:
        assert post_cbor(node.url, "/v1/events", agent.envelope()).status == 201
        health = get(node.url, "/healthz")
        assert health.status == 200 and health.json()["writes"]["ok"] is True
        filler = os.path.join(small_disk, "filler")
        fill(filler)
        # The WAL may still hold free pages for a few commits, and a checkpoint that restarts it can
        # free some again, so a write may still succeed between failures; once neither can give
        # space, every write fails. Each answer is true either way (checked below, after recovery).
        sent: list[tuple[bytes, int]] = []
        for _ in range(60):
            envelope = agent.envelope()
            sent.append((envelope, post_cbor(node.url, "/v1/events", envelope).status))
            if [status for _, status in sent[-4:]] == [503] * 4:
                break
        statuses = [status for _, status in sent]
        assert statuses[-4:] == [503] * 4 and set(statuses) <= {201, 503}, statuses
        failures = [line for line in log_lines(node) if "commit failed" in line]
        assert 1 <= len(failures) <= 2, failures  # log_repeats_max: many failed commits, at most 2 lines
        health = get(node.url, "/healthz")
        doc = health.json()
        assert health.status == 503 and doc["status"] == "disk_full" and doc["error"]["code"] == "disk_full"
        assert doc["writes"]["ok"] is False and doc["reads"]["ok"] is True
        assert get(node.url, f"/v1/agents/{agent.public_key.hex()}/balance").status == 200  # reads still work
        os.remove(filler)
        assert post_cbor(node.url, "/v1/events", agent.envelope()).status == 201
        assert get(node.url, "/healthz").json()["status"] == "ok"
        # nothing half-written: each event answered 201 is in the log, each answered 503 is not
        for envelope, status in sent:
            held = get(node.url, f"/v1/events/{parse_envelope(envelope).event.id_hex}").status
            assert held == (200 if status == 201 else 404), (status, held)
    finally:
        node.kill()


def test_health_reports_a_nearly_full_disk_before_a_write_fails(small_disk):
    node = NodeProcess(os.path.join(small_disk, "node"), env={"ATS_DISK_FREE_BYTES_MIN": str(64 * 1024 * 1024)}).start()
    try:
        health = get(node.url, "/healthz")
        assert health.status == 503 and health.json()["writes"]["code"] == "disk_full"
    finally:
        node.kill()


def start_bulk_client(node: NodeProcess) -> tuple[list[threading.Thread], list]:
    """A bulk client from 127.0.0.1: 3 batches of 1000 events posted at once (a thread each), returned
    once the node has committed its first 64 events; the replies are appended as they come."""
    bulk = TestAgent()
    batches = [b"\x99\x03\xe8" + b"".join(bulk.envelope() for _ in range(1000)) for _ in range(3)]
    replies: list = []
    threads = [threading.Thread(target=lambda b=b: replies.append(
        request(node.url, "POST", "/v1/events/batch", b, "application/cbor"))) for b in batches]
    for t in threads:
        t.start()
    deadline = time.monotonic() + WAIT_S
    while get(node.url, "/healthz").json()["size"] < 64 and time.monotonic() < deadline:
        time.sleep(0.005)
    return threads, replies


def test_a_single_event_is_committed_ahead_of_another_clients_queued_batches(tmp_path):
    """The fair queue: with a client's 3 × 1000 events queued, another client's single event is
    committed within the next commits (at most commit_share_events of the big client each), not
    after the 3000."""
    env = {"ATS_DEFAULT_PLAN": "platformium", "ATS_COMMIT_SHARE_EVENTS": "64", "ATS_BATCH_EVENTS_MAX": "1000", "ATS_BODY_BYTES_MAX": str(1 << 20),
           "ATS_HEAVY_REQUESTS_PER_CLIENT_MAX": "3"}  # the commit queue alone decides the order
    node = NodeProcess(str(tmp_path / "node"), env=env).start()
    try:
        honest = TestAgent()
        threads, replies = start_bulk_client(node)
        size_before = get(node.url, "/healthz").json()["size"]
        conn = http.client.HTTPConnection(node.host, node.port, timeout=WAIT_S, source_address=("127.0.0.2", 0))
        conn.request("POST", "/v1/events", body=honest.envelope(), headers={"Content-Type": "application/cbor"})
        single = conn.getresponse()
        index = json.loads(single.read())["index"]
        conn.close()
        for t in threads:
            t.join(60)
        assert single.status == 201 and [r.status for r in replies] == [200, 200, 200]
        assert size_before < 2000, "the bulk client was nearly done before the single event was sent: inconclusive"
        # FIFO would put it behind the rest of the 3000; the fair queue after a few 64-event commits
        assert index - size_before <= 400, (size_before, index)
    finally:
        node.kill()


def test_a_light_clients_events_are_committed_alone_while_bulk_fills_the_gaps(tmp_path):
    """The pacer (node/fairqueue.py): while a bulk client has thousands of events queued, a client
    sending one event at a time finds the writer free: each of its events is committed alone (its
    checkpoint, read back from the SQLite file, covers that one entry), and the bulk client's events
    are committed in between (at least its floor), so neither waits for the other to finish."""
    env = {"ATS_DEFAULT_PLAN": "platformium", "ATS_BATCH_EVENTS_MAX": "1000", "ATS_BODY_BYTES_MAX": str(1 << 20), "ATS_HEAVY_REQUESTS_PER_CLIENT_MAX": "3"}
    node = NodeProcess(str(tmp_path / "node"), env=env).start()
    try:
        honest = TestAgent()
        singles = [honest.envelope() for _ in range(60)]
        threads, replies = start_bulk_client(node)
        conn = http.client.HTTPConnection(node.host, node.port, timeout=WAIT_S, source_address=("127.0.0.2", 0))
        indices = []
        for body in singles:  # closed loop: the next event when the last one is answered
            conn.request("POST", "/v1/events", body=body, headers={"Content-Type": "application/cbor"})
            reply = conn.getresponse()
            assert reply.status == 201
            indices.append(json.loads(reply.read())["index"])
        conn.close()
        bulk_left = 3000 + 60 + 2 - get(node.url, "/healthz").json()["size"]
        for t in threads:
            t.join(60)
        assert [r.status for r in replies] == [200, 200, 200]
        assert bulk_left > 500, "the bulk client was nearly done before the light client finished: inconclusive"
        db = sqlite3.connect(f"file:{tmp_path / 'node' / 'ledger.sqlite'}?mode=ro", uri=True)
        sizes = sorted(r[0] for r in db.execute(
            "SELECT c.size FROM checkpoints c JOIN origins o ON o.id = c.origin WHERE o.public_key = ?",
            (bytes.fromhex(get(node.url, "/v1/node").json()["public_key"]),)))
        db.close()
        committed = set(sizes)
        alone = sum(1 for i in indices if i in committed and i + 1 in committed)  # checkpoints at i and i + 1
        assert alone >= 45, (alone, indices)
        # bulk clients keep their floor (commit_bulk_min_pct of the writer): at least two full shares
        # of 8 were committed while the light client came and went, besides portions in its gaps
        between = indices[-1] - indices[0] + 1 - len(indices)
        assert between >= 2 * 8, ("too few bulk events were committed between them", between, indices)
    finally:
        node.kill()


def test_a_client_over_its_byte_rate_is_slowed_and_another_client_is_not(tmp_path):
    env = {"ATS_CLIENT_BYTES_PER_S": str(256 * 1024), "ATS_BODY_BYTES_MAX": str(512 * 1024)}
    node = NodeProcess(str(tmp_path / "node"), env=env).start()
    try:
        body = b"\x99\x00\x01" + b"\x00" * (512 * 1024 - 3)  # a malformed batch, read in full, then 400
        started = time.monotonic()
        fast = []

        def other_client():
            while time.monotonic() - started < 2.5:
                conn = http.client.HTTPConnection(node.host, node.port, timeout=WAIT_S, source_address=("127.0.0.2", 0))
                t0 = time.monotonic()
                conn.request("GET", "/healthz")
                assert conn.getresponse().status == 200
                fast.append(time.monotonic() - t0)
                conn.close()
                time.sleep(0.1)

        watcher = threading.Thread(target=other_client)
        watcher.start()
        statuses = [request(node.url, "POST", "/v1/events/batch", body, "application/cbor").status for _ in range(3)]
        elapsed = time.monotonic() - started
        watcher.join(WAIT_S)
        assert statuses == [400, 400, 400]
        # 1.5 MiB at 256 KiB/s after a burst of 576 KiB: at least ~3.6 s
        assert elapsed >= 2.5, elapsed
        assert fast and max(fast) < 1.0, fast
    finally:
        node.kill()
