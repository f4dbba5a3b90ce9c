"""The provider stub behind THINK: what an agent asks reaches it through the kernel, counted."""

from __future__ import annotations

import pytest
from clove_sdk.protocol import SyscallOp
from provider_stub import Reply

pytestmark = pytest.mark.integration


def test_think_reaches_the_stub_and_tool_calls_come_back(llm_kernel, provider_stub):
    provider_stub.responder = lambda body: (
        Reply(tool_calls=[{"name": "get_weather", "arguments": {"city": "Paris"}}])
        if body.get("tools")
        else Reply(content="plain answer")
    )
    c = llm_kernel.client()
    r = c.think("hello")
    assert r["content"] == "plain answer"
    assert r["tokens"] == 18
    tools = [{"name": "get_weather", "description": "weather", "parameters": {"type": "object", "properties": {}}}]
    r = c.call_json(SyscallOp.SYS_THINK, {"prompt": "weather?", "tools": tools})
    assert r["finish_reason"] == "tool_calls"
    assert r["tool_calls"][0]["name"] == "get_weather"
    assert r["tool_calls"][0]["arguments"] == {"city": "Paris"}
    assert len(provider_stub.requests) == 2
    assert provider_stub.requests[0]["messages"][-1]["content"] == "hello"
