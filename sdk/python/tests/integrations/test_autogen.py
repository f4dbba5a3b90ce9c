"""The AutoGen AgentChat adapter (clove_sdk.integrations.autogen) against a real kernel and real AgentChat:
the model client is THINK (the provider stub answers), tools are Clove syscalls, and a team's members run
as sandboxed Clove agents behind CloveRemoteAgent proxies."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import require
from provider_stub import Reply

from clove_sdk.integrations._mailbox import Caller
from clove_sdk.protocol import FrameDecoder, SyscallOp

pytestmark = pytest.mark.integration

TESTS = Path(__file__).resolve().parents[1]
SDK = TESTS.parent  # sdk/python: the agents' PYTHONPATH
MEMBER = str(TESTS / "agents" / "autogen_member.py")
DEADLINE = 180.0  # seconds; a member imports AgentChat on a machine shared with others


def _autogen():
    require("autogen_agentchat")
    from clove_sdk.integrations import autogen as adapter

    return adapter


def _roles(body):
    return [m.get("role") for m in body.get("messages") or []]


def test_assistant_agent_calls_a_clove_tool_through_think(llm_kernel, provider_stub):
    adapter = _autogen()
    from autogen_agentchat.agents import AssistantAgent
    from autogen_agentchat.messages import TextMessage, ToolCallExecutionEvent, ToolCallRequestEvent

    op = llm_kernel.client(timeout=60)
    provider_stub.responder = lambda body: (
        Reply(content="Stored 42.")
        if _roles(body)[-1] == "tool"
        else Reply(tool_calls=[{"name": "clove_store", "arguments": {"key": "ag/answer", "value": 42}}])
    )
    model = adapter.CloveChatCompletionClient(client=op)
    agent = AssistantAgent(
        "keeper",
        model_client=model,
        tools=adapter.clove_tools(op, include=["store"]),
        reflect_on_tool_use=True,
        system_message="You keep things.",
    )
    result = asyncio.run(agent.run(task="Remember 42 as ag/answer."))

    kinds = [type(m) for m in result.messages]
    assert kinds == [TextMessage, ToolCallRequestEvent, ToolCallExecutionEvent, TextMessage]
    assert result.messages[-1].content == "Stored 42."
    executed = result.messages[2].content[0]
    assert executed.is_error is False and "ag/answer" in executed.content
    assert op.fetch("ag/answer", "global")["value"] == 42  # a real STORE, by this connection
    # THINK carried the tool, then the call (FunctionCall) and its result (FunctionExecutionResult) back
    first, second = provider_stub.requests
    assert first["tools"][0]["function"]["name"] == "clove_store"
    call = second["messages"][-2]["tool_calls"][0]
    assert call["function"]["name"] == "clove_store" and call["id"] == result.messages[1].content[0].id
    assert second["messages"][-1]["role"] == "tool" and second["messages"][-1]["tool_call_id"] == call["id"]
    # usage: the client's counts are the kernel's
    assert model.total_usage().prompt_tokens == 22 and model.total_usage().completion_tokens == 14
    assert op.get_permissions()["permissions"]["llm"]["tokens_used"] == 36


def test_a_refused_tool_is_an_error_result_the_model_reads(llm_kernel, provider_stub):
    adapter = _autogen()
    from autogen_agentchat.agents import AssistantAgent

    op = llm_kernel.client(timeout=60)
    provider_stub.responder = lambda body: (
        Reply(content="Cannot read it.")
        if _roles(body)[-1] == "tool"
        else Reply(tool_calls=[{"name": "clove_read", "arguments": {"path": "/tmp/../etc/shadow"}}])
    )
    agent = AssistantAgent(
        "reader",
        model_client=adapter.CloveChatCompletionClient(client=op),
        tools=adapter.clove_tools(op, include=["read"]),
        reflect_on_tool_use=True,
    )
    result = asyncio.run(agent.run(task="Read /tmp/../etc/shadow."))
    executed = result.messages[2].content[0]
    assert executed.is_error is True and "permission_denied" in executed.content
    assert "permission_denied" in provider_stub.requests[1]["messages"][-1]["content"]
    assert result.messages[-1].content == "Cannot read it."


def test_create_stream_yields_the_answer_as_it_comes_then_the_result(llm_kernel, provider_stub):
    adapter = _autogen()
    from autogen_core.models import CreateResult, SystemMessage, UserMessage

    provider_stub.responder = lambda body: Reply(content="streamed through the kernel")
    conn = llm_kernel.client(timeout=60)
    sent = _opcodes_sent(conn)
    model = adapter.CloveChatCompletionClient(client=conn)

    async def collect():
        return [
            x
            async for x in model.create_stream(
                [SystemMessage(content="be brief"), UserMessage(content="say it", source="user")]
            )
        ]

    items = asyncio.run(collect())
    chunks, result = items[:-1], items[-1]
    assert isinstance(result, CreateResult) and result.content == "streamed through the kernel"
    # the pieces as the kernel had them at each THINK_STREAM_NEXT (how many depends on timing)
    assert chunks and all(isinstance(c, str) for c in chunks)
    assert "".join(chunks) == "streamed through the kernel"
    assert sent[0] == SyscallOp.SYS_THINK_STREAM and set(sent[1:]) == {SyscallOp.SYS_THINK_STREAM_NEXT}
    assert result.usage.prompt_tokens == 11 and result.usage.completion_tokens == 7
    assert provider_stub.requests[0]["messages"][0] == {"role": "system", "content": "be brief"}


def test_a_cancelled_call_or_stream_ends_before_the_model_answers(llm_kernel, provider_stub):
    adapter = _autogen()
    from autogen_core import CancellationToken
    from autogen_core.models import UserMessage

    release = threading.Event()

    def respond(body):
        release.wait(DEADLINE)
        return Reply(content="too late")

    provider_stub.responder = respond
    model = adapter.CloveChatCompletionClient(socket_path=llm_kernel.socket)
    msgs = [UserMessage(content="take your time", source="user")]

    async def cancelled(stream):
        token = CancellationToken()

        async def consume():
            if stream:
                return [x async for x in model.create_stream(msgs, cancellation_token=token)]
            return await model.create(msgs, cancellation_token=token)

        task = asyncio.ensure_future(consume())
        seen = len(provider_stub.requests)
        while len(provider_stub.requests) == seen:  # the call reached the model, which is holding it
            await asyncio.sleep(0.02)
        token.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    try:  # the model answers only once released: each call ends before that, cancelled
        asyncio.run(cancelled(stream=False))
        asyncio.run(cancelled(stream=True))
    finally:
        release.set()


def _opcodes_sent(client):
    """The opcodes of the requests ``client`` writes from now on."""
    client._connect()
    sock, decoder, sent = client._sock, FrameDecoder(), []

    class Tap:
        def sendall(self, data, *a):
            sent.extend(f.opcode for f in decoder.feed(bytes(data)))
            return sock.sendall(data, *a)

        def __getattr__(self, name):
            return getattr(sock, name)

    client._sock = Tap()
    return sent


def test_the_model_client_is_an_autogen_component(llm_kernel):
    adapter = _autogen()
    from autogen_core.models import ChatCompletionClient, UserMessage

    model = adapter.CloveChatCompletionClient("stub-model", provider="stub", socket_path=llm_kernel.socket)
    again = ChatCompletionClient.load_component(model.dump_component())
    assert isinstance(again, adapter.CloveChatCompletionClient)
    assert again._to_config() == model._to_config()
    msgs = [UserMessage(content="x" * 400, source="user")]
    assert model.count_tokens(msgs) >= 100
    assert model.remaining_tokens(msgs) == 32768 - model.count_tokens(msgs)
    assert model.model_info["function_calling"] is True and model.model_info["vision"] is False
    with pytest.raises(ValueError, match="JSON mode"):
        asyncio.run(model.create(msgs, json_output=True))
    with pytest.raises(ValueError, match="unknown create args"):
        asyncio.run(model.create(msgs, extra_create_args={"top_k": 3}))


def test_tool_choice_reaches_the_provider(llm_kernel, provider_stub):
    adapter = _autogen()
    from autogen_core.models import UserMessage

    op = llm_kernel.client(timeout=60)
    provider_stub.responder = lambda body: Reply(
        tool_calls=[{"name": "clove_fetch", "arguments": {"key": "k"}}]
    )
    model = adapter.CloveChatCompletionClient(client=op)
    store, fetch = adapter.clove_tools(op, include=["store", "fetch"])
    msgs = [UserMessage(content="fetch k", source="user")]
    r = asyncio.run(model.create(msgs, tools=[store, fetch], tool_choice=fetch))
    assert r.finish_reason == "function_calls" and r.content[0].name == "clove_fetch"
    asyncio.run(model.create(msgs, tools=[store, fetch], tool_choice="required"))
    asked = [body.get("tool_choice") for body in provider_stub.requests]
    assert asked == [{"type": "function", "function": {"name": "clove_fetch"}}, "required"]


def _agent(op, name):
    return next(a for a in op.list_agents() if a["name"] == name)


def _wait(cond, what, deadline=DEADLINE):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_team_of_remote_agents_survives_a_member_killed_mid_turn(llm_kernel, provider_stub):
    adapter = _autogen()
    from autogen_agentchat.conditions import MaxMessageTermination
    from autogen_agentchat.teams import RoundRobinGroupChat

    op = llm_kernel.client(timeout=60)
    critic_turn2 = []
    started = threading.Event()
    release = threading.Event()

    def respond(body):
        msgs = body.get("messages") or []
        who = "writer" if "You are the writer" in msgs[0]["content"] else "critic"
        n = 1 + sum(1 for m in msgs if m["role"] == "assistant")  # its own earlier turns, from its state
        if who == "critic" and any("DRAFT 2" in (m.get("content") or "") for m in msgs):
            critic_turn2.append([m.get("content") for m in msgs])
            if len(critic_turn2) == 1:  # the first attempt hangs until the test has killed the critic
                started.set()
                release.wait(DEADLINE)
        return Reply(content=f"{'DRAFT' if who == 'writer' else 'REVIEW'} {n}")

    provider_stub.responder = respond
    for name in ("writer", "critic"):
        r = op.spawn(
            name,
            None,
            command=[sys.executable, MEMBER, name, f"You are the {name}."],
            env={"PYTHONPATH": str(SDK)},
            restart_policy="on-failure",
            max_restarts=3,
        )
        assert r["success"], r

    caller = Caller(llm_kernel.client(timeout=60))
    team = RoundRobinGroupChat(
        [adapter.CloveRemoteAgent("writer", caller=caller), adapter.CloveRemoteAgent("critic", caller=caller)],
        termination_condition=MaxMessageTermination(5),
    )
    result: dict = {}

    def run():
        try:
            result["out"] = asyncio.run(team.run(task="Write a line about cloves."))
        except BaseException as e:  # noqa: BLE001 - reported by the test below
            result["error"] = e
            started.set()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        assert started.wait(DEADLINE), "the critic's second turn never reached the model"
        assert "error" not in result, f"the team failed: {result['error']!r}"
        before = _agent(op, "critic")
        os.kill(before["pid"], signal.SIGKILL)  # mid-turn: its THINK is still waiting for the model
        after = _wait(
            lambda: (a := _agent(op, "critic"))["restarts"] >= 1 and a["state"] == "RUNNING" and a,
            "the kernel to restart the critic",
        )
        assert after["pid"] != before["pid"]
    finally:
        release.set()
    t.join(DEADLINE)
    assert not t.is_alive(), "the team did not finish"
    assert "error" not in result, f"the team failed: {result['error']!r}"

    said = [(m.source, m.content) for m in result["out"].messages]
    assert said == [
        ("user", "Write a line about cloves."),
        ("writer", "DRAFT 1"),
        ("critic", "REVIEW 1"),
        ("writer", "DRAFT 2"),
        ("critic", "REVIEW 2"),
    ]
    # the restarted critic loaded its checkpointed state: its second attempt saw its own first turn
    assert len(critic_turn2) == 2 and critic_turn2[0] == critic_turn2[1]
    assert "REVIEW 1" in critic_turn2[1] and "DRAFT 1" in "".join(critic_turn2[1])
    # tokens: the kernel counted each member's THINKs (the one the kill cut got no answer: none)
    used = {n: op.get_quota(name=n)["usage"]["llm_tokens"] for n in ("writer", "critic")}
    assert used == {"writer": 36, "critic": 36}


def test_a_turn_sent_again_runs_once_and_is_answered_once(llm_kernel, provider_stub):
    adapter = _autogen()
    op = llm_kernel.client(timeout=60)
    release = threading.Event()

    def respond(body):
        if len(provider_stub.requests) == 1:  # the first turn waits until it has been sent again
            release.wait(DEADLINE)
        return Reply(content=f"ANSWER {len(provider_stub.requests)}")

    provider_stub.responder = respond
    r = op.spawn(
        "solo",
        None,
        command=[sys.executable, MEMBER, "solo", "You are the solo agent."],
        env={"PYTHONPATH": str(SDK)},
        restart_policy="on-failure",
    )
    assert r["success"], r
    caller = Caller(llm_kernel.client(timeout=60), resend_after=0.5)
    proxy = adapter.CloveRemoteAgent("solo", caller=caller)
    result: dict = {}
    t = threading.Thread(target=lambda: result.setdefault("first", asyncio.run(proxy.run(task="hello"))), daemon=True)
    t.start()
    try:
        # while the first turn waits for the model, the proxy sends it again: the copies queue up
        _wait(lambda: len(provider_stub.requests) == 1 and _agent(op, "solo")["mailbox"] >= 2, "the turn to be re-sent")
    finally:
        release.set()
    t.join(DEADLINE)
    assert result["first"].messages[-1].content == "ANSWER 1"
    second = asyncio.run(proxy.run(task="and again"))
    assert second.messages[-1].content == "ANSWER 2"

    # the model was asked once per turn, and the agent's state holds the first turn once
    assert len(provider_stub.requests) == 2
    assert [m["content"] for m in provider_stub.requests[1]["messages"]] == [
        "You are the solo agent.",
        "hello",
        "ANSWER 1",
        "and again",
    ]
    # the answers to the copies reached the caller too, and were dropped
    assert not caller.unrelated

    # reset, save_state and load_state reach the remote agent too
    from autogen_core import CancellationToken

    state = asyncio.run(proxy.save_state())
    assert [m["content"] for m in state["llm_context"]["messages"]] == ["hello", "ANSWER 1", "and again", "ANSWER 2"]
    asyncio.run(proxy.on_reset(CancellationToken()))
    asyncio.run(proxy.run(task="after the reset"))
    assert [m["content"] for m in provider_stub.requests[-1]["messages"]] == [
        "You are the solo agent.",
        "after the reset",
    ]
    asyncio.run(proxy.load_state(state))
    asyncio.run(proxy.run(task="after the load"))
    assert [m["content"] for m in provider_stub.requests[-1]["messages"]][-2:] == ["ANSWER 2", "after the load"]
