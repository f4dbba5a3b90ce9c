"""clove_sdk.integrations.langchain on a real kernel, with the pinned langchain-core and langgraph: ChatClove
through THINK (the provider stub behind the kernel), Clove tools as syscalls, a LangGraph tool loop whose
tool really runs in the kernel, and CloveCheckpointSaver — round trips, and a graph run as a sandboxed
agent that the kernel restarts after SIGKILL and that resumes from its checkpoint."""

from __future__ import annotations

import asyncio
import json
import operator
import sys
import time
from pathlib import Path
from typing import Annotated, TypedDict

import pytest

from conftest import require

pytestmark = pytest.mark.integration

require("langchain_core")
require("langgraph")

from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage, ToolMessage  # noqa: E402
from langgraph.checkpoint.base import empty_checkpoint  # noqa: E402
from langgraph.graph import END, START, MessagesState, StateGraph  # noqa: E402
from langgraph.prebuilt import ToolNode, tools_condition  # noqa: E402
from provider_stub import ProviderStub, Reply  # noqa: E402

from clove_sdk import SyscallOp  # noqa: E402
from clove_sdk.integrations.langchain import TOOL_NAMES, ChatClove, CloveCheckpointSaver, clove_tools  # noqa: E402

AGENTS = Path(__file__).resolve().parents[1] / "agents"
# the frameworks' interpreter (this one), for agents that run framework code
FRAMEWORKS_PYTHON = sys.executable


def tokens_used(client) -> int:
    """The kernel's count of the caller's LLM tokens (its rights' ``llm.tokens_used``)."""
    return client.get_permissions(check=True)["permissions"]["llm"]["tokens_used"]


def wait_for_key(client, key: str, kernel, agent: str, deadline_s: float = 90.0):
    """Polls a global key until it exists (an agent's result); at the deadline, fails with the agent's and
    the kernel's logs."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        r = client.fetch(key, scope="global")
        if r.get("exists"):
            return r["value"]
        time.sleep(0.1)
    pytest.fail(f"{key} never stored within {deadline_s:g} s\n{kernel.agent_log(agent)}\n{kernel.log()}")


def spawn_framework_agent(op, name: str, script: str, **extra):
    """SPAWN with the frameworks' interpreter (operator-only `python`), sandboxed."""
    r = op.call_json(
        SyscallOp.SYS_SPAWN, {"name": name, "script": str(AGENTS / script), "python": FRAMEWORKS_PYTHON, **extra}
    )
    assert r.get("success") is True, r
    return r


# ---------------------------------------------------------------------------------------------- model


def test_chat_clove_calls_think_and_reports_the_kernels_counts(llm_kernel, provider_stub):
    provider_stub.responder = lambda body: Reply(content="bonjour")
    op = llm_kernel.client()
    model = ChatClove(client=op, temperature=0.2, max_tokens=64)

    reply = model.invoke([SystemMessage("answer in French"), HumanMessage("hello")])

    assert isinstance(reply, AIMessage) and reply.content == "bonjour"
    assert reply.usage_metadata == {"input_tokens": 11, "output_tokens": 7, "total_tokens": 18}
    assert reply.response_metadata["finish_reason"] == "stop"
    assert reply.response_metadata["model_name"] == "stub-model"
    sent = provider_stub.requests[-1]
    assert sent["messages"] == [
        {"role": "system", "content": "answer in French"},
        {"role": "user", "content": "hello"},
    ]
    assert sent["temperature"] == 0.2 and sent["max_tokens"] == 64
    assert tokens_used(op) == 18  # counted by the kernel, from the provider's figures

    # the async API runs the same call (in an executor)
    again = asyncio.run(model.ainvoke("again"))
    assert again.content == "bonjour" and tokens_used(op) == 36


def test_bound_tools_reach_the_provider_and_calls_come_back(llm_kernel, provider_stub):
    provider_stub.responder = lambda body: Reply(tool_calls=[{"name": "clove_fetch", "arguments": {"key": "x"}}])
    op = llm_kernel.client()
    model = ChatClove(client=op).bind_tools(clove_tools(op, include=["fetch", "store"]))

    reply = model.invoke("what is x?")

    assert [t["function"]["name"] for t in provider_stub.requests[-1]["tools"]] == ["clove_fetch", "clove_store"]
    assert reply.tool_calls == [{"name": "clove_fetch", "args": {"key": "x"}, "id": "call_1_0", "type": "tool_call"}]
    assert reply.response_metadata["finish_reason"] == "tool_calls"


def test_a_langgraph_tool_loop_runs_a_clove_tool_in_the_kernel(llm_kernel, provider_stub):
    provider_stub.responder = ProviderStub.scripted(
        [
            Reply(tool_calls=[{"name": "clove_store", "arguments": {"key": "lc-react", "value": {"by": "the model"}}}]),
            Reply(content="stored it"),
        ]
    ).responder
    op = llm_kernel.client()
    tools = clove_tools(op, include=["store", "fetch"])
    model = ChatClove(client=op).bind_tools(tools)

    builder = StateGraph(MessagesState)
    builder.add_node("agent", lambda state: {"messages": [model.invoke(state["messages"])]})
    builder.add_node("tools", ToolNode(tools))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition)
    builder.add_edge("tools", "agent")
    graph = builder.compile()

    pieces, out = [], None
    question = {"messages": [HumanMessage("remember who made you")]}
    for mode, data in graph.stream(question, stream_mode=["messages", "values"]):
        if mode == "messages" and isinstance(data[0], AIMessageChunk):
            pieces.append(data[0].content)
        elif mode == "values":
            out = data

    # the graph streamed the model's answer in pieces (THINK_STREAM), and ended with it
    assert len([p for p in pieces if p]) >= 2 and "".join(pieces) == "stored it"
    assert out["messages"][-1].content == "stored it"
    tool_message = out["messages"][2]
    assert isinstance(tool_message, ToolMessage) and tool_message.status == "success"
    # the tool ran in the kernel: the key is there
    assert op.fetch("lc-react", scope="global")["value"] == {"by": "the model"}
    # the model saw its call and the tool's result, through THINK
    assert len(provider_stub.requests) == 2
    sent = provider_stub.requests[1]["messages"]
    assert sent[-2]["role"] == "assistant" and sent[-2]["tool_calls"][0]["function"]["name"] == "clove_store"
    assert sent[-1]["role"] == "tool" and sent[-1]["tool_call_id"] == "call_1_0"
    assert json.loads(sent[-1]["content"]) == {"key": "lc-react"}
    assert tokens_used(op) == 36  # two THINK calls of 18, counted by the kernel


def test_streaming_gives_chunks_text_and_tool_calls(llm_kernel, provider_stub):
    op = llm_kernel.client()
    model = ChatClove(client=op)

    provider_stub.responder = lambda body: Reply(content="one two three four")
    chunks = list(model.stream("count"))
    assert len([c for c in chunks if c.content]) >= 2  # the stub sends the text in pieces
    full = chunks[0]
    for c in chunks[1:]:
        full += c
    assert full.content == "one two three four"
    assert full.usage_metadata == {"input_tokens": 11, "output_tokens": 7, "total_tokens": 18}
    assert provider_stub.requests[-1]["stream"] is True

    provider_stub.responder = lambda body: Reply(tool_calls=[{"name": "clove_fetch", "arguments": {"key": "k"}}])
    bound = model.bind_tools(clove_tools(op, include=["fetch"]))

    async def collect():
        return [c async for c in bound.astream("fetch k")]

    achunks = asyncio.run(collect())
    assert any(c.tool_call_chunks for c in achunks)
    afull = achunks[0]
    for c in achunks[1:]:
        afull += c
    [call] = afull.tool_calls
    assert call["name"] == "clove_fetch" and call["args"] == {"key": "k"} and call["id"]
    assert tokens_used(op) == 36


def test_tool_choice_reaches_the_provider(llm_kernel, provider_stub):
    provider_stub.responder = lambda body: Reply(tool_calls=[{"name": "clove_fetch", "arguments": {"key": "x"}}])
    op = llm_kernel.client()
    tools = clove_tools(op, include=["fetch", "store"])
    model = ChatClove(client=op)

    model.bind_tools(tools, tool_choice="clove_fetch").invoke("x?")
    assert provider_stub.requests[-1]["tool_choice"] == {"type": "function", "function": {"name": "clove_fetch"}}
    model.bind_tools(tools, tool_choice="any").invoke("x?")
    assert provider_stub.requests[-1]["tool_choice"] == "required"
    model.bind_tools(tools[:1], tool_choice=True).invoke("x?")
    assert provider_stub.requests[-1]["tool_choice"] == {"type": "function", "function": {"name": "clove_fetch"}}


def test_bad_input_is_refused_by_name(llm_kernel):
    op = llm_kernel.client()
    model = ChatClove(client=op)
    with pytest.raises(ValueError, match="stop sequences"):
        model.invoke("hi", stop=["\n"])
    with pytest.raises(ValueError, match="none of the bound tools"):
        model.bind_tools(clove_tools(op, include=["store"]), tool_choice="clove_exec")
    with pytest.raises(ValueError, match="'image_url' content block"):
        model.invoke([HumanMessage([{"type": "image_url", "image_url": {"url": "http://x/y.png"}}])])
    with pytest.raises(ValueError, match="unknown tools"):
        clove_tools(op, include=["rm"])


# ---------------------------------------------------------------------------------------------- tools


def test_each_tool_is_its_syscall(kernel, tmp_path):
    op = kernel.client()
    me = op.hello()["agent_id"]
    tools = {t.name: t for t in clove_tools(op)}
    assert sorted(tools) == sorted(f"clove_{n}" for n in TOOL_NAMES)

    def call(name: str, **args):
        m = tools[name].invoke({"type": "tool_call", "id": f"call-{name}", "name": name, "args": args})
        assert isinstance(m, ToolMessage) and m.status == "success", m
        return json.loads(m.content)

    path = str(tmp_path / "note.txt")
    assert call("clove_write", path=path, content="one")["bytes_written"] == 3
    assert call("clove_write", path=path, content=" two", mode="append")["bytes_written"] == 4
    assert call("clove_read", path=path)["content"] == "one two"
    assert call("clove_exec", command=f"cat {path}")["stdout"] == "one two"
    assert call("clove_store", key="lc-tools", value=[1, 2], scope="session") == {"key": "lc-tools"}
    assert call("clove_fetch", key="lc-tools")["value"] == [1, 2]
    assert call("clove_send", to=me, message={"hi": 1})["delivered_to"] == me
    [m] = call("clove_recv", max_messages=5, wait_s=1)["messages"]
    assert m["message"] == {"hi": 1} and m["from"] == me
    # a kernel error reply (not a refusal of rights here: a missing file) is the tool's error, too
    missing = tools["clove_read"].invoke(
        {"type": "tool_call", "id": "call-x", "name": "clove_read", "args": {"path": str(tmp_path / "nope")}}
    )
    assert missing.status == "error" and "[not_found]" in missing.content


def test_a_refused_syscall_is_the_tools_error_message_not_a_crash(kernel):
    op = kernel.client()
    # the standard preset: no HTTP (can_http false); the refusal is audited
    spawn_framework_agent(op, "lc-denied", "lc_denied_agent.py", permissions="standard")
    result = wait_for_key(op, "lc-denied-result", kernel, "lc-denied")

    refused = result["refused"]
    assert refused["status"] == "error" and refused["tool_call_id"] == "call-http"
    assert refused["content"].startswith("clove_http: the kernel refused: ")
    assert "[permission_denied]" in refused["content"]
    assert result["allowed"]["status"] == "success"
    assert json.loads(result["allowed"]["content"]) == {"key": "lc-denied-ok"}
    assert op.fetch("lc-denied-ok", scope="global")["value"] == 1
    denials = op.get_audit_log(category="SECURITY", limit=100)["entries"]
    assert any(
        e["agent_name"] == "lc-denied" and e["event_type"] == "PERMISSION_DENIED" and e["details"]["syscall"] == "HTTP"
        for e in denials
    ), denials


# ---------------------------------------------------------------------------------------------- saver


def _checkpoint(channel_values: dict, versions: dict) -> dict:
    c = empty_checkpoint()
    c["channel_values"] = channel_values
    c["channel_versions"] = versions
    return c


def test_the_saver_round_trips_checkpoints_and_writes_and_lists_them(kernel):
    op = kernel.client()
    saver = CloveCheckpointSaver(op)
    base = {"configurable": {"thread_id": "t/1", "checkpoint_ns": ""}}
    msgs = [HumanMessage("hi"), AIMessage("hello")]

    c1 = _checkpoint({"messages": msgs, "count": 1}, {"messages": "1", "count": "1"})
    cfg1 = saver.put(base, c1, {"source": "input", "step": -1}, {"messages": "1", "count": "1"})
    assert cfg1["configurable"]["checkpoint_id"] == c1["id"]
    saver.put_writes(cfg1, [("count", 2), ("__error__", "boom")], task_id="task-a", task_path="~a")
    saver.put_writes(cfg1, [("count", 99)], task_id="task-a")  # a regular write already stored is kept

    c2 = _checkpoint({"messages": msgs, "count": 2}, {"messages": "1", "count": "2"})
    cfg2 = saver.put(cfg1, c2, {"source": "loop", "step": 0}, {"count": "2"})
    saver.put({"configurable": {"thread_id": "other", "checkpoint_ns": ""}}, _checkpoint({}, {}), {}, {})

    latest = saver.get_tuple(base)
    assert latest.config == cfg2
    assert latest.checkpoint["channel_values"] == {"messages": msgs, "count": 2}
    assert latest.parent_config == cfg1
    assert latest.metadata["step"] == 0

    first = saver.get_tuple(cfg1)
    assert first.checkpoint["channel_values"]["count"] == 1
    assert first.checkpoint["channel_values"]["messages"][0].content == "hi"
    # in LangGraph's order (writes_sort_key): special writes (negative indexes) first
    assert first.pending_writes == [("task-a", "__error__", "boom"), ("task-a", "count", 2)]

    listed = list(saver.list(base))
    assert [t.config["configurable"]["checkpoint_id"] for t in listed] == [c2["id"], c1["id"]]
    assert [t.checkpoint["id"] for t in saver.list(base, filter={"source": "input"})] == [c1["id"]]
    assert [t.checkpoint["id"] for t in saver.list(base, before=cfg2)] == [c1["id"]]
    assert len(list(saver.list(base, limit=1))) == 1
    assert {t.config["configurable"]["thread_id"] for t in saver.list(None)} == {"t/1", "other"}

    # the keys are the caller's agent-scope keys, one namespace per thread
    keys = op.list_keys("langgraph/")["keys"]
    assert any(k.startswith("langgraph/c/t%2F1/") for k in keys)

    # async variants
    async def async_side():
        t = await saver.aget_tuple(base)
        listed = [x async for x in saver.alist(base)]
        return t, listed

    t, alisted = asyncio.run(async_side())
    assert t.checkpoint["id"] == c2["id"] and len(alisted) == 2

    saver.delete_thread("t/1")
    assert saver.get_tuple(base) is None and list(saver.list(base)) == []
    assert saver.get_tuple({"configurable": {"thread_id": "other"}}) is not None


class Counter(TypedDict):
    seen: Annotated[list[str], operator.add]


def test_a_graph_keeps_its_history_in_the_kernel(kernel):
    op = kernel.client()
    builder = StateGraph(Counter)
    builder.add_node("a", lambda s: {"seen": ["a"]})
    builder.add_node("b", lambda s: {"seen": ["b"]})
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    builder.add_edge("b", END)
    config = {"configurable": {"thread_id": "history"}}

    graph = builder.compile(checkpointer=CloveCheckpointSaver(op))
    assert graph.invoke({"seen": []}, config)["seen"] == ["a", "b"]
    # a new saver and graph (a new process, say) continue the same thread from the kernel's store
    graph2 = builder.compile(checkpointer=CloveCheckpointSaver(kernel.client()))
    assert graph2.get_state(config).values["seen"] == ["a", "b"]
    # (async this time: aget_tuple, aput, aput_writes)
    assert asyncio.run(graph2.ainvoke({"seen": []}, config))["seen"] == ["a", "b", "a", "b"]
    assert len(list(graph2.get_state_history(config))) == 8  # input + 3 steps, twice


def test_a_killed_graph_agent_is_restarted_and_resumes_from_its_checkpoint(llm_kernel, provider_stub):
    answers = {f"step {i}": f"answer {i}" for i in range(1, 5)}
    provider_stub.responder = lambda body: Reply(content=answers[body["messages"][-1]["content"]])
    op = llm_kernel.client()
    op.subscribe(["AGENT_EXITED", "AGENT_RESTARTING"], check=True)

    r = spawn_framework_agent(op, "lc-resume", "lc_resume_agent.py", restart_policy="on-failure")
    result = wait_for_key(op, "lc-resume-result", llm_kernel, "lc-resume")

    assert result["runs"] == 2  # killed once, started again by the kernel
    assert result["resumed_at"] == ["step3"]  # from the checkpoint after step 2
    assert result["answers"] == ["answer 1", "answer 2", "answer 3", "answer 4"]
    # each step asked the model once: the finished steps were not run again
    assert [b["messages"][-1]["content"] for b in provider_stub.requests] == ["step 1", "step 2", "step 3", "step 4"]
    events = op.poll_events(100)["events"]
    assert any(e["type"] == "AGENT_RESTARTING" and e["data"].get("agent_id") == r["id"] for e in events), events
