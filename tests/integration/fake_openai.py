"""A small OpenAI-compatible upstream for gateway tests and benchmarks: aiohttp, in its own thread.

It answers /v1/chat/completions (whole or streamed, with the usage chunk when asked for
`stream_options.include_usage`, as the real API does), /v1/embeddings and /v1/models, and
counts every call it receives. The model name picks a behaviour:

    test-model      answers; completion_tokens = min(max_tokens, 8) (or the `user` field "usage=IN,OUT")
    slow-model      streams 1 chunk every `slow_ms` ms, 40 chunks, then usage
    error-model     400 with an OpenAI error body
    garbage-model   200 with a body that is not JSON (or, streamed, events without usage)
    hang-model      never answers
    test-embed      embeddings with usage
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

from aiohttp import web

ERROR_BODY = {"error": {"message": "this model refuses", "type": "invalid_request_error", "param": None, "code": "refused"}}


class FakeOpenAI:
    def __init__(self, slow_ms: int = 50, port: int = 0):
        self.port = port
        self.calls: dict[str, int] = {}
        self.produced = 0  # tokens this upstream would bill: prompt tokens, and each completion token sent
        self.slow_ms = slow_ms
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------

    def __enter__(self) -> "FakeOpenAI":
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="fake-openai", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake upstream did not start")
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._loop is not None

        async def stop() -> None:
            await self._runner.cleanup()  # type: ignore[union-attr]
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in others:
                t.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)  # type: ignore[union-attr]

    def _run(self, ready: threading.Event) -> None:
        self._loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/v1/_stats", self.stats)
        app.router.add_post("/v1/messages", self.messages)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        self._loop.run_until_complete(site.start())
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/v1"
        ready.set()
        self._loop.run_forever()
        self._loop.close()

    def count(self, key: str) -> None:
        with self._lock:
            self.calls[key] = self.calls.get(key, 0) + 1

    def produce(self, tokens: int) -> None:
        with self._lock:
            self.produced += tokens

    def total(self) -> int:
        with self._lock:
            return sum(self.calls.values())

    # -- handlers --------------------------------------------------------------------------

    @staticmethod
    def _usage(doc: dict[str, Any]) -> tuple[int, int]:
        user = doc.get("user") or ""
        if isinstance(user, str) and user.startswith("usage="):
            a, b = user[6:].split(",")
            return int(a), int(b)
        text = json.dumps(doc.get("messages", ""))
        return len(text) // 4 + 1, min(doc.get("max_tokens") or doc.get("max_completion_tokens") or 8, 8)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        doc = await request.json()
        model = doc.get("model")
        self.count(f"chat:{model}")
        if model == "error-model":
            return web.json_response(ERROR_BODY, status=400)
        if model == "hang-model":
            await asyncio.sleep(3600)
        tokens_in, tokens_out = self._usage(doc)
        created = int(time.time())
        usage = {"prompt_tokens": tokens_in, "completion_tokens": tokens_out, "total_tokens": tokens_in + tokens_out}
        if not doc.get("stream"):
            if model == "garbage-model":
                return web.Response(text="<html>not json</html>", content_type="application/json")
            self.produce(tokens_in + tokens_out)
            return web.json_response({
                "id": "chatcmpl-fake", "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "tok " * tokens_out},
                             "finish_reason": "stop"}],
                "usage": usage,
            })
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        include = (doc.get("stream_options") or {}).get("include_usage") is True
        chunks = 40 if model == "slow-model" else tokens_out
        self.produce(tokens_in)
        try:
            for i in range(chunks):
                chunk = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": created, "model": model,
                         "choices": [{"index": 0, "delta": {"content": "tok "} if i else {"role": "assistant", "content": "tok "},
                                      "finish_reason": None}]}
                if include and model != "garbage-model":
                    chunk["usage"] = None
                await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                self.produce(1)
                if model == "slow-model":
                    await asyncio.sleep(self.slow_ms / 1000)
            if include and model != "garbage-model":
                last = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": created, "model": model,
                        "choices": [], "usage": {**usage, "completion_tokens": chunks, "total_tokens": tokens_in + chunks}}
                await resp.write(b"data: " + json.dumps(last).encode() + b"\n\n")
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
        except (ConnectionError, RuntimeError):
            pass
        return resp

    async def embeddings(self, request: web.Request) -> web.Response:
        doc = await request.json()
        self.count(f"embeddings:{doc.get('model')}")
        inputs = doc.get("input")
        inputs = inputs if isinstance(inputs, list) else [inputs]
        tokens = sum(len(str(x)) // 4 + 1 for x in inputs)
        self.produce(tokens)
        return web.json_response({
            "object": "list", "model": doc.get("model"),
            "data": [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]} for i in range(len(inputs))],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        })

    async def messages(self, request: web.Request) -> web.StreamResponse:
        """Anthropic's Messages API: usage in message_start (input) and message_delta (output)."""
        doc = await request.json()
        model = doc.get("model")
        self.count(f"messages:{model}")
        if request.headers.get("x-api-key") != "sk-anthropic-node" or not request.headers.get("anthropic-version"):
            return web.json_response({"type": "error", "error": {"type": "authentication_error", "message": "bad key"}},
                                     status=401)
        tokens_in = len(json.dumps(doc.get("messages", ""))) // 4 + 1
        tokens_out = min(int(doc.get("max_tokens", 8)), 6)
        self.produce(tokens_in + tokens_out)
        message = {"id": "msg_fake", "type": "message", "role": "assistant", "model": model, "stop_reason": None,
                   "stop_sequence": None, "content": [], "usage": {"input_tokens": tokens_in, "output_tokens": 1}}
        if not doc.get("stream"):
            return web.json_response({**message, "content": [{"type": "text", "text": "tok " * tokens_out}],
                                      "stop_reason": "end_turn", "usage": {"input_tokens": tokens_in, "output_tokens": tokens_out}})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)

        async def send(kind: str, data: dict) -> None:
            await resp.write(f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode())

        await send("message_start", {"message": message})
        await send("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
        for _ in range(tokens_out):
            await send("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "tok "}})
        await send("content_block_stop", {"index": 0})
        await send("message_delta", {"delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                     "usage": {"output_tokens": tokens_out}})
        await send("message_stop", {})
        await resp.write_eof()
        return resp

    async def stats(self, request: web.Request) -> web.Response:
        """Not OpenAI: what this upstream served (for benchmarks running it in another process)."""
        with self._lock:
            return web.json_response({"produced": self.produced, "calls": dict(self.calls)})

    async def models(self, request: web.Request) -> web.Response:
        self.count("models")
        return web.json_response({"object": "list", "data": [
            {"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in ("test-model", "test-embed")
        ]})
