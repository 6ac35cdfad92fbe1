"""node/gateway/sse.py: whole events out, bytes unchanged, wherever the chunks were cut; usage found."""

from __future__ import annotations

import json
import random

import pytest

from node.gateway.sse import SseSplitter, stream_usage, usage_from

CHUNK = {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "hi"}}], "usage": None}
LAST = {"id": "c", "object": "chat.completion.chunk", "choices": [],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}}


def _stream(sep: bytes) -> bytes:
    events = [b"data: " + json.dumps(CHUNK).encode()] * 3 + [b"data: " + json.dumps(LAST).encode(), b"data: [DONE]"]
    return b"".join(e + sep for e in events)


@pytest.mark.parametrize("sep", [b"\n\n", b"\r\n\r\n", b"\r\r"])
def test_events_come_out_whole_and_unchanged_wherever_chunks_are_cut(sep):
    raw = _stream(sep)
    rng = random.Random(5)
    for _ in range(50):
        splitter, out, i = SseSplitter(1 << 20), [], 0
        while i < len(raw):
            j = i + rng.randint(1, 40)
            out.extend(splitter.feed(raw[i:j]))
            i = j
        assert b"".join(out) == raw and splitter.rest() == b""
        assert len(out) == 5 and all(e.endswith(sep) for e in out)


def test_usage_chunk_is_found_and_told_apart():
    raw = _stream(b"\n\n")
    found = [stream_usage(e) for e in SseSplitter(1 << 20).feed(raw)]
    assert [u is not None for u, _only in found] == [False, False, False, True, False]
    usage, only = found[3]
    assert (usage.tokens_in, usage.tokens_out, only) == (12, 3, True)


def test_an_event_that_never_ends_is_passed_on_unparsed():
    splitter = SseSplitter(100)
    out = splitter.feed(b"data: " + b"x" * 200)
    assert out == [b"data: " + b"x" * 200] and splitter.rest() == b""


@pytest.mark.parametrize("doc", [
    None, [], {"usage": None}, {"usage": {"prompt_tokens": "12"}}, {"usage": {"prompt_tokens": -1}},
    {"usage": {"prompt_tokens": True, "completion_tokens": 1}}, {"usage": {"prompt_tokens": 2**41}},
])
def test_malformed_usage_is_no_usage(doc):
    assert usage_from(doc) is None


def test_embeddings_usage_has_no_completion_tokens():
    u = usage_from({"model": "e", "usage": {"prompt_tokens": 7, "total_tokens": 7}})
    assert (u.tokens_in, u.tokens_out, u.model) == (7, 0, "e")
