"""The CrewAI adapter (clove_sdk.integrations.crewai) against a real kernel and real CrewAI: the model is
THINK (the provider stub answers), tools are Clove syscalls, crew members are sandboxed Clove agents."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

from pathlib import Path

import pytest
from conftest import require
from provider_stub import Reply, last_text

for _k, _v in (
    ("OTEL_SDK_DISABLED", "true"),
    ("CREWAI_DISABLE_TELEMETRY", "true"),
    ("CREWAI_DISABLE_TRACKING", "true"),
    ("CREWAI_TRACING_ENABLED", "false"),
):
    os.environ.setdefault(_k, _v)

pytestmark = pytest.mark.integration

TESTS = Path(__file__).resolve().parents[1]
SDK = TESTS.parent  # sdk/python: the agents' PYTHONPATH
MEMBER = str(TESTS / "agents" / "crewai_member.py")
DEADLINE = 180.0  # seconds; a member imports CrewAI (several seconds) on a machine shared with others


def _crewai():
    require("crewai")
    from crewai import Agent, Crew, Process, Task

    from clove_sdk.integrations import crewai as adapter

    return Agent, Crew, Process, Task, adapter


def _last_role(body):
    msgs = body.get("messages") or []
    return msgs[-1].get("role") if msgs else None


def _system(body):
    return "".join(m.get("content") or "" for m in body.get("messages") or [] if m.get("role") == "system")


def test_clove_llm_runs_a_task_with_a_clove_tool_through_the_kernel(llm_kernel, provider_stub):
    Agent, Crew, Process, Task, adapter = _crewai()
    op = llm_kernel.client(timeout=60)

    def respond(body):
        if _last_role(body) == "tool":
            return Reply(content="I stored it: 42")
        return Reply(tool_calls=[{"name": "clove_store", "arguments": {"key": "crew/answer", "value": "42"}}])

    provider_stub.responder = respond
    llm = adapter.CloveLLM(client=op)
    agent = Agent(
        role="keeper",
        goal="remember the answer",
        backstory="keeps things",
        llm=llm,
        tools=adapter.clove_tools(op, include=["store", "fetch"]),
        allow_delegation=False,
    )
    task = Task(description="Store the answer 42 under crew/answer.", expected_output="a note", agent=agent)
    crew = Crew(agents=[agent], tasks=[task], process=Process.sequential)
    out = crew.kickoff()

    assert out.raw == "I stored it: 42"
    # the tool was a real STORE, made by this connection
    assert op.fetch("crew/answer", "global")["value"] == "42"
    # THINK carried the tools, then the call and its result back to the model
    first, second = provider_stub.requests[0], provider_stub.requests[1]
    assert {t["function"]["name"] for t in first["tools"]} == {"clove_store", "clove_fetch"}
    call = second["messages"][-2]["tool_calls"][0]
    assert call["function"]["name"] == "clove_store"
    tool_turn = second["messages"][-1]
    assert tool_turn["role"] == "tool" and tool_turn["tool_call_id"] == call["id"]
    assert "crew/answer" in tool_turn["content"]
    # usage: what CrewAI reports is what the kernel counted for this connection
    assert crew.usage_metrics.total_tokens == 36 and crew.usage_metrics.successful_requests == 2
    assert op.get_permissions()["permissions"]["llm"]["tokens_used"] == 36


def test_a_refused_tool_is_a_tool_failure_and_the_model_reads_why(llm_kernel, provider_stub):
    Agent, Crew, Process, Task, adapter = _crewai()
    op = llm_kernel.client(timeout=60)
    provider_stub.responder = lambda body: (
        Reply(content="could not read it")
        if _last_role(body) == "tool"
        else Reply(tool_calls=[{"name": "clove_read", "arguments": {"path": "/tmp/../etc/shadow"}}])
    )
    agent = Agent(
        role="reader",
        goal="read files",
        backstory="reads",
        llm=adapter.CloveLLM(client=op),
        tools=adapter.clove_tools(op, include=["read"]),
        allow_delegation=False,
    )
    task = Task(description="Read /tmp/../etc/shadow.", expected_output="its content", agent=agent)
    out = Crew(agents=[agent], tasks=[task]).kickoff()

    assert out.raw == "could not read it"
    failures = out.tasks_output[0].tool_failures
    assert len(failures) == 1 and failures[0].tool_name == "clove_read"
    assert failures[0].failure.code == "permission_denied"
    tool_turn = provider_stub.requests[1]["messages"][-1]
    assert tool_turn["role"] == "tool" and "permission_denied" in tool_turn["content"]


def test_think_messages_keep_turns_and_refuse_what_think_cannot_take():
    _crewai()
    from clove_sdk.integrations.crewai import think_messages

    call = {"id": "c1", "type": "function", "function": {"name": "clove_fetch", "arguments": '{"key": "k"}'}}
    called = {"id": "c1", "name": "clove_fetch", "arguments": {"key": "k"}}  # THINK's shape: arguments parsed
    assert think_messages(
        [
            {"role": "system", "content": "s"},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "name": "clove_fetch", "content": "{}"},
        ]
    ) == [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "ab"},
        {"role": "assistant", "content": "", "tool_calls": [called]},
        {"role": "tool", "content": "{}", "tool_call_id": "c1", "name": "clove_fetch"},
    ]
    with pytest.raises(ValueError, match="image_url"):
        think_messages([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}])
    with pytest.raises(ValueError, match="no tool_call_id"):
        think_messages([{"role": "tool", "content": "x"}])


def _spawn_member(op, name, role, goal, tools=""):
    r = op.spawn(
        name,
        None,
        command=[sys.executable, MEMBER, role, goal, tools],
        env={"PYTHONPATH": str(SDK)},
        restart_policy="on-failure",
        max_restarts=3,
    )
    assert r["success"], r
    return r


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


def test_crew_members_are_clove_agents_and_a_member_killed_mid_task_comes_back(llm_kernel, provider_stub):
    Agent, Crew, Process, Task, adapter = _crewai()
    op = llm_kernel.client(timeout=60)
    writer_calls = []
    writer_started = threading.Event()
    release = threading.Event()

    def respond(body):
        system = _system(body)
        if "researcher" in system:
            if _last_role(body) == "tool":
                return Reply(content="Cloves are dried flower buds.")
            store = {"name": "clove_store", "arguments": {"key": "crew/facts", "value": "flower buds"}}
            return Reply(tool_calls=[store])
        if "writer" in system:
            writer_calls.append(last_text(body))
            if len(writer_calls) == 1:  # the first attempt hangs until the test has killed the writer
                writer_started.set()
                release.wait(DEADLINE)
            return Reply(content="Thought: I have it\nFinal Answer: ARTICLE: cloves are dried flower buds.")
        return Reply(content="Final Answer: ?")

    provider_stub.responder = respond
    _spawn_member(op, "researcher", "researcher", "find facts", "clove_store")
    _spawn_member(op, "writer", "writer", "write articles")

    # the coordinator: the stand-ins share one connection (a client's own mailbox) to the kernel's socket
    sock = llm_kernel.socket
    researcher = adapter.CloveMember(
        member="researcher", socket_path=sock, role="researcher", goal="find facts", backstory="-"
    )
    writer = adapter.CloveMember(member="writer", socket_path=sock, role="writer", goal="write articles", backstory="-")
    research = Task(description="Find one fact about cloves.", expected_output="a fact", agent=researcher)
    article = Task(description="Write a one-line article from the fact.", expected_output="an article", agent=writer)
    crew = Crew(agents=[researcher, writer], tasks=[research, article], process=Process.sequential)

    result: dict = {}

    def kickoff():
        try:
            result["out"] = crew.kickoff()
        except BaseException as e:  # noqa: BLE001 - reported by the test below
            result["error"] = e
            writer_started.set()

    t = threading.Thread(target=kickoff, daemon=True)
    t.start()
    try:
        assert writer_started.wait(DEADLINE), "the writer's task never reached the model"
        assert "error" not in result, f"the crew failed: {result['error']!r}"
        before = _agent(op, "writer")
        os.kill(before["pid"], signal.SIGKILL)  # mid-task: its THINK is still waiting for the model
        after = _wait(
            lambda: (a := _agent(op, "writer"))["restarts"] >= 1 and a["state"] == "RUNNING" and a,
            "the kernel to restart the writer",
        )
        assert after["pid"] != before["pid"]
    finally:
        release.set()
    t.join(DEADLINE)
    assert not t.is_alive(), "the crew did not finish"
    assert "error" not in result, f"the crew failed: {result['error']!r}"
    out = result["out"]

    assert out.raw == "ARTICLE: cloves are dried flower buds."
    assert out.tasks_output[0].raw == "Cloves are dried flower buds."
    # the researcher's tool was a STORE made by the researcher agent itself
    assert op.fetch("crew/facts", "global")["value"] == "flower buds"
    # the writer got the task again after its restart, with the researcher's output as context
    assert len(writer_calls) == 2 and all("dried flower buds" in c for c in writer_calls)
    # tokens: the kernel counted each member's THINKs (the one cut by the kill got no answer, so no
    # tokens), and the crew's usage is what the members reported
    used = {n: op.get_quota(name=n)["usage"]["llm_tokens"] for n in ("researcher", "writer")}
    assert used == {"researcher": 36, "writer": 18}
    assert crew.usage_metrics.total_tokens == 54
