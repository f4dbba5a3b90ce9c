"""A local LLM provider for tests: an OpenAI-compatible chat-completions server the kernel's THINK calls.

The kernel (not the agent) talks to it, with the operator's configuration (``<data-dir>/llm.json``, see
:func:`write_llm_config`), so a test sees exactly what went through THINK: every request is kept in
``stub.requests``. What it answers is decided by a *responder*: a function of the request body returning
a :class:`Reply`. Two ready-made ones:

- :meth:`ProviderStub.scripted` answers from a list, in order (the last entry repeats);
- :meth:`ProviderStub.rules` answers with the first rule whose regular expression matches the text of the
  last message (user or tool turn), else a default.

Streamed requests (``"stream": true``) are answered as server-sent events, content in pieces and tool
calls in OpenAI's delta form, then a usage chunk. Usage is fixed: ``USAGE`` (prompt 11, completion 7).
Standard library only, so it runs under any interpreter the tests use.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Sequence

USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}


@dataclass
class Reply:
    """One answer: text, and/or tool calls ``{"name": ..., "arguments": {...}}``; ``delay`` seconds first."""

    content: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    delay: float = 0.0
    status: int = 200


Responder = Callable[[dict[str, Any]], Reply]


def last_text(body: dict[str, Any]) -> str:
    """The text of the last user or tool message of an OpenAI request body."""
    for m in reversed(body.get("messages") or []):
        if m.get("role") in ("user", "tool"):
            c = m.get("content")
            if isinstance(c, list):
                return "".join(p.get("text", "") for p in c if isinstance(p, dict))
            return c if isinstance(c, str) else ""
    return ""


class ProviderStub:
    """``with ProviderStub(responder) as stub: stub.base_url`` — a server on 127.0.0.1, a free port."""

    def __init__(self, responder: Responder) -> None:
        self.responder = responder
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- ready-made responders ---------------------------------------------------------------------
    @classmethod
    def scripted(cls, replies: Sequence[Reply | str]) -> "ProviderStub":
        queue = [r if isinstance(r, Reply) else Reply(content=r) for r in replies]
        if not queue:
            raise ValueError("scripted: at least one reply")
        lock = threading.Lock()

        def respond(_body: dict[str, Any]) -> Reply:
            with lock:
                return queue.pop(0) if len(queue) > 1 else queue[0]

        return cls(respond)

    @classmethod
    def rules(cls, rules: Sequence[tuple[str, Reply | str]], default: Reply | str = "ok") -> "ProviderStub":
        compiled = [(re.compile(p, re.S), r if isinstance(r, Reply) else Reply(content=r)) for p, r in rules]
        dflt = default if isinstance(default, Reply) else Reply(content=default)

        def respond(body: dict[str, Any]) -> Reply:
            text = last_text(body)
            for rx, reply in compiled:
                if rx.search(text):
                    return reply
            return dflt

        return cls(respond)

    # -- lifecycle ------------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        assert self._server is not None, "not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def start(self) -> "ProviderStub":
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_a: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                n = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(n) or b"{}")
                with stub._lock:
                    stub.requests.append(body)
                reply = stub.responder(body)
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.status != 200:
                    data = json.dumps({"error": {"message": f"stub status {reply.status}"}}).encode()
                    self.send_response(reply.status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                model = body.get("model", "stub-model")
                calls = [
                    {
                        "id": tc.get("id") or f"call_{len(stub.requests)}_{i}",
                        "type": "function",
                        "function": {
                            "name": tc["name"],
                            "arguments": tc["arguments"]
                            if isinstance(tc["arguments"], str)
                            else json.dumps(tc["arguments"]),
                        },
                    }
                    for i, tc in enumerate(reply.tool_calls)
                ]
                finish = "tool_calls" if calls else "stop"
                if body.get("stream"):
                    self.send_response(200)
                    self.send_header("content-type", "text/event-stream")
                    self.send_header("connection", "close")
                    self.end_headers()

                    def event(obj: dict[str, Any]) -> None:
                        self.wfile.write(f"data: {json.dumps(obj)}\n\n".encode())
                        self.wfile.flush()

                    base = {"id": "chatcmpl-stub", "object": "chat.completion.chunk", "model": model}
                    step = len(reply.content) // 3 + 1  # three pieces, so that a stream has deltas
                    for p in (reply.content[i : i + step] for i in range(0, len(reply.content), step)):
                        # paced: the kernel merges the pieces its caller has not taken yet, so pieces sent
                        # back to back may reach a slow (loaded) caller as one
                        time.sleep(0.02)
                        event({**base, "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]})
                    for i, c in enumerate(calls):
                        event(
                            {
                                **base,
                                "choices": [
                                    {
                                        "index": 0,
                                        "delta": {"tool_calls": [{"index": i, **c}]},
                                        "finish_reason": None,
                                    }
                                ],
                            }
                        )
                    event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
                    event({**base, "choices": [], "usage": USAGE})
                    self.wfile.write(b"data: [DONE]\n\n")
                    self.wfile.flush()
                    self.close_connection = True
                    return
                message: dict[str, Any] = {"role": "assistant", "content": reply.content or None}
                if calls:
                    message["tool_calls"] = calls
                data = json.dumps(
                    {
                        "id": "chatcmpl-stub",
                        "object": "chat.completion",
                        "model": model,
                        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                        "usage": USAGE,
                    }
                ).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "ProviderStub":
        return self.start()

    def __exit__(self, *_exc: Any) -> None:
        self.stop()


def write_llm_config(data_dir: str, base_url: str, model: str = "stub-model", stream: bool = True) -> str:
    """Writes ``<data_dir>/llm.json`` (0600, as the kernel demands) with one ``openai`` provider."""
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    path = os.path.join(data_dir, "llm.json")
    cfg = {
        "providers": [
            {"name": "stub", "kind": "openai", "base_url": base_url, "default_model": model, "stream": stream}
        ],
        "default_provider": "stub",
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(cfg, f)
    return path
