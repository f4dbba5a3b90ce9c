"""Test agent (test_langchain.py): runs Clove tools the way LangGraph's ToolNode does (a tool call in,
a ToolMessage out) under rights that refuse HTTP, and stores what came out as ``lc-denied-result``."""

from clove_sdk import CloveClient
from clove_sdk.integrations.langchain import clove_tools

client = CloveClient(strict=True)
http_tool, store_tool = clove_tools(client, include=["http", "store"])
refused = http_tool.invoke(
    {"type": "tool_call", "id": "call-http", "name": "clove_http", "args": {"url": "http://127.0.0.1:9/"}}
)
allowed = store_tool.invoke(
    {"type": "tool_call", "id": "call-store", "name": "clove_store", "args": {"key": "lc-denied-ok", "value": 1}}
)
client.store(
    "lc-denied-result",
    {
        "refused": {"status": refused.status, "content": refused.content, "tool_call_id": refused.tool_call_id},
        "allowed": {"status": allowed.status, "content": allowed.content},
    },
)
