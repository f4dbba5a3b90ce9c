"""Streamed THINK and tool turns through the Python SDK, against a real kernel whose provider is the local
stub (``llm_kernel`` + ``provider_stub``): what the stub answers comes back in pieces that make THINK's
reply, tool calls round trip with their results, and the kernel counts each call once."""

from __future__ import annotations

import json

import pytest
from clove_sdk import KernelError, ThinkStream
from provider_stub import USAGE, Reply, last_text

pytestmark = pytest.mark.integration

WEATHER = {
    "name": "get_weather",
    "description": "the weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def assemble(pieces: list[dict]) -> tuple[str, list[dict]]:
    """The answer the pieces make: its text, and each call (id, name, arguments) by its index."""
    text = ""
    calls: dict[int, dict] = {}
    for p in pieces:
        if "content" in p:
            text += p["content"]
        else:
            tc = p["tool_call"]
            c = calls.setdefault(tc["index"], {"name": "", "arguments": ""})
            if "id" in tc:
                c["id"] = tc["id"]
            c["name"] += tc.get("name", "")
            c["arguments"] += tc.get("arguments", "")
    return text, [{**c, "arguments": json.loads(c["arguments"])} for _, c in sorted(calls.items())]


def weather_or_answer(body: dict) -> Reply:
    """Calls get_weather when asked about the weather; answers from a tool turn's result."""
    last = (body.get("messages") or [{}])[-1]
    if last.get("role") == "tool":
        return Reply(content=f"it is {last['content']} ({last['tool_call_id']})")
    if "weather" in last_text(body) and body.get("tools"):
        return Reply(content="let me look", tool_calls=[{"name": "get_weather", "arguments": {"city": "Paris"}}])
    return Reply(content=f"you said: {last_text(body)}")


def test_the_pieces_make_thinks_answer_and_tokens_are_counted_once(llm_kernel, provider_stub):
    provider_stub.responder = lambda body: Reply(content="a streamed answer in pieces")
    c = llm_kernel.client()
    stream = c.think_stream("stream me")
    assert isinstance(stream, ThinkStream) and stream.stream_id and stream.provider == "stub"
    pieces = list(stream)
    text, calls = assemble(pieces)
    assert stream.done
    assert stream.result["success"] is True
    assert text == stream.result["content"] == "a streamed answer in pieces"
    assert calls == []
    assert stream.result["tokens"] == USAGE["total_tokens"]
    # the kernel asked the stub for a stream
    assert provider_stub.requests[-1]["stream"] is True
    assert c.think("stream me")["content"] == text
    llm = c.get_permissions()["permissions"]["llm"]
    assert llm["calls_made"] == 2
    assert llm["tokens_used"] == 2 * USAGE["total_tokens"]
    # the end was taken: the stream is gone
    assert c.think_stream_next(stream.stream_id, 0)["code"] == "not_found"


def test_a_tool_call_round_trips_with_its_result(llm_kernel, provider_stub):
    provider_stub.responder = weather_or_answer
    c = llm_kernel.client(strict=True)
    first = c.think("what is the weather in Paris?", tools=[WEATHER], tool_choice="required")
    assert first["finish_reason"] == "tool_calls"
    (call,) = first["tool_calls"]
    assert call["name"] == "get_weather" and call["arguments"] == {"city": "Paris"} and call["id"]
    assert provider_stub.requests[-1]["tool_choice"] == "required"
    history = [
        {"role": "user", "content": "what is the weather in Paris?"},
        {"role": "assistant", "content": first["content"], "tool_calls": first["tool_calls"]},
        {"role": "tool", "tool_call_id": call["id"], "content": "sunny, 21 C"},
    ]
    # no prompt: the conversation is the request
    second = c.think(messages=history, tools=[WEATHER])
    assert second["content"] == f"it is sunny, 21 C ({call['id']})"
    assert second["finish_reason"] == "stop"
    sent = provider_stub.requests[-1]["messages"]
    assert sent[1] == {
        "role": "assistant",
        "content": "let me look",
        "tool_calls": [
            {
                "id": call["id"],
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
            }
        ],
    }
    assert sent[2] == {"role": "tool", "tool_call_id": call["id"], "content": "sunny, 21 C"}
    # streamed, the call comes in pieces that make the reply's tool_calls
    stream = c.think_stream("weather in Paris, streamed", tools=[WEATHER])
    text, calls = assemble(list(stream))
    assert text == stream.result["content"] == "let me look"
    assert calls == stream.result["tool_calls"]
    assert calls[0]["name"] == "get_weather" and calls[0]["arguments"] == {"city": "Paris"}


def test_bad_tool_turns_are_refused(llm_kernel):
    c = llm_kernel.client()
    r = c.think(messages=[{"role": "tool", "content": "x"}])
    assert r["code"] == "invalid_request" and "tool_call_id" in r["error"]
    r = c.think("x", tool_choice={"name": "nope"}, tools=[WEATHER])
    assert r["code"] == "invalid_request" and "nope" in r["error"]
    strict = llm_kernel.client(strict=True)
    with pytest.raises(KernelError) as e:
        strict.think_stream("x", tool_choice="required")
    assert e.value.code == "invalid_request"


def test_a_failure_ends_the_stream_with_thinks_error(llm_kernel, provider_stub):
    provider_stub.responder = lambda body: Reply(status=500)
    # not strict: the iteration ends, and the result is the error reply
    c = llm_kernel.client()
    stream = c.think_stream("fail please")
    assert list(stream) == []
    assert stream.result["success"] is False
    assert stream.result["code"] == "upstream_failed" and stream.result["status"] == 500
    # strict: the iteration raises it
    strict = llm_kernel.client(strict=True)
    stream = strict.think_stream("fail please")
    with pytest.raises(KernelError) as e:
        list(stream)
    assert e.value.code == "upstream_failed"
    assert stream.done


def test_streams_are_their_makers_and_cancel_ends_them(llm_kernel, provider_stub):
    provider_stub.responder = lambda body: Reply(content="slow", delay=2.0)
    a = llm_kernel.client()
    b = llm_kernel.client()
    stream = a.think_stream("take your time")
    assert b.think_stream_next(stream.stream_id, 0)["code"] == "not_found"
    assert b.think_stream_cancel(stream.stream_id)["code"] == "not_found"
    assert a.think_stream_next(stream.stream_id, 0) == {"success": True, "deltas": [], "done": False}
    assert stream.cancel() == {"success": True, "cancelled": True}
    assert stream.done and stream.result["code"] == "cancelled"
    assert a.think_stream_next(stream.stream_id, 0)["code"] == "not_found"
    # leaving a with block early cancels too
    with a.think_stream("take your time again") as s:
        sid = s.stream_id
    assert a.think_stream_next(sid, 0)["code"] == "not_found"
    # the kernel keeps serving the caller
    provider_stub.responder = lambda body: Reply(content="quick")
    assert a.think_stream("now quick").collect()["content"] == "quick"
