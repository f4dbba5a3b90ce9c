"""The generic entry point (``python -m clove_sdk.integrations.run module:attr``) serving framework objects
as real Clove agents: a LangGraph graph and plain callables, spawned by a real kernel in its sandbox with
the frameworks' interpreter, asked over SEND/RECV; ``--once``; a crash mid-request; ``clove run --entry``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

from clove_sdk import SyscallOp

from pathlib import Path

from conftest import require  # this folder's conftest (the parent's fixtures apply too)

SDK = Path(__file__).resolve().parents[2]  # sdk/python
REPO = SDK.parents[1]
CLOVE_JS = REPO / "bin" / "clove.js"

pytestmark = pytest.mark.integration

PY = sys.executable  # the frameworks' venv python (ci/pytest.sh runs this folder with it)
RUNNER = "clove_sdk.integrations.run"

GRAPH = textwrap.dedent(
    """
    from typing import Annotated, TypedDict

    from langchain_core.language_models.fake_chat_models import FakeListChatModel
    from langgraph.graph import END, START, StateGraph
    from langgraph.graph.message import add_messages

    class State(TypedDict):
        messages: Annotated[list, add_messages]
        steps: list

    model = FakeListChatModel(responses=["forty-two"])

    def think(state):
        return {"messages": [model.invoke(state["messages"])], "steps": state.get("steps", []) + ["think"]}

    def check(state):
        return {"steps": state["steps"] + ["check"]}

    g = StateGraph(State)
    g.add_node("think", think)
    g.add_node("check", check)
    g.add_edge(START, "think")
    g.add_edge("think", "check")
    g.add_edge("check", END)
    graph = g.compile()
    """
)

PLAIN = textwrap.dedent(
    """
    import asyncio, os, signal

    def double(x):
        if x == "boom":
            raise ValueError("no boom please")
        return {"doubled": x * 2, "pid": os.getpid()}

    async def later(x):
        await asyncio.sleep(0.01)
        return [x, x]

    def crash_once(x):
        # the agent's work directory outlives its process: the marker says this is the second start
        marker = os.path.join(os.getcwd(), "crashed-once")
        if not os.path.exists(marker):
            open(marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return {"survived": x, "pid": os.getpid()}

    def always_crash(x):
        os.kill(os.getpid(), signal.SIGKILL)

    class Holder:
        inner = staticmethod(double)

    not_runnable = 42
    """
)


TEAM = textwrap.dedent(
    """
    from autogen_agentchat.agents import AssistantAgent
    from autogen_core.models import ModelFamily, ModelInfo
    from autogen_ext.models.replay import ReplayChatCompletionClient

    info = ModelInfo(vision=False, function_calling=False, json_output=False, family=ModelFamily.UNKNOWN,
                     structured_output=False)
    agent = AssistantAgent("helper", model_client=ReplayChatCompletionClient(["hello from autogen"] * 10,
                                                                              model_info=info))
    """
)


@pytest.fixture
def modules():
    """A world-readable directory with the entry modules (agents run as other uids)."""
    d = tempfile.mkdtemp(prefix="clv-entry-", dir="/tmp")
    os.chmod(d, 0o755)
    for name, text in {"lg_entry.py": GRAPH, "plain_entry.py": PLAIN, "ag_entry.py": TEAM}.items():
        p = os.path.join(d, name)
        with open(p, "w") as f:
            f.write(text)
        os.chmod(p, 0o644)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def spawn_entry(kernel, op, name, entry, moddir, *extra, restart="always"):
    r = op.call_json(
        SyscallOp.SYS_SPAWN,
        {
            "name": name,
            "command": [PY, "-m", RUNNER, entry, *extra],
            "env": {"PYTHONPATH": moddir},
            "restart_policy": restart,
            "max_restarts": 10,
        },
    )
    assert r.get("success") is True, f"SPAWN {name}: {r}\n{kernel.log()}"
    return r


def ask(kernel, op, to, body, timeout=90.0):
    """Sends ``body`` to agent ``to`` and returns the agent's answer (the message body)."""
    r = op.send_message(body, to=to)
    assert r.get("success") is True, f"SEND to {to}: {r}"
    msg = op.wait_message(timeout)
    assert msg is not None, f"no answer from {to} within {timeout}s\n{kernel.agent_log(to)}\n{kernel.log()}"
    return msg["message"]


def agent_row(op, name):
    return next((a for a in op.list_agents() if a.get("name") == name), None)


def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_a_langgraph_graph_served_as_an_agent(kernel, op, modules):
    require("langgraph")
    spawn_entry(kernel, op, "graph", "lg_entry:graph", modules)
    out = ask(kernel, op, "graph", {"input": {"messages": [{"role": "user", "content": "six times seven?"}]}, "id": "q1"})
    assert out.get("id") == "q1" and "error" not in out, out
    state = out["output"]
    assert state["steps"] == ["think", "check"]
    human, ai = state["messages"]
    assert (human["type"], human["content"]) == ("human", "six times seven?")
    assert (ai["type"], ai["content"]) == ("ai", "forty-two")
    # the same agent serves the next request (one process, no restart)
    again = ask(kernel, op, "graph", {"input": {"messages": [{"role": "user", "content": "again"}]}, "id": 2})
    assert again["id"] == 2 and again["output"]["messages"][-1]["content"] == "forty-two"
    assert agent_row(op, "graph")["restarts"] == 0


def test_an_autogen_agent_served_as_an_agent(kernel, op, modules):
    require("autogen_agentchat")
    spawn_entry(kernel, op, "helper", "ag_entry:agent", modules)
    out = ask(kernel, op, "helper", {"input": "say hello", "id": "a1"})
    assert out["id"] == "a1" and "error" not in out, out
    task, answer = out["output"]["messages"]  # AutoGen's TaskResult, as JSON
    assert (task["source"], task["content"]) == ("user", "say hello")
    assert (answer["source"], answer["content"]) == ("helper", "hello from autogen")
    # a non-string input is given to the agent as its JSON text
    again = ask(kernel, op, "helper", {"input": {"q": 1}, "id": "a2"})
    assert again["output"]["messages"][0]["content"] == '{"q": 1}'


def test_a_plain_callable_its_errors_and_bad_messages(kernel, op, modules):
    spawn_entry(kernel, op, "doubler", "plain_entry:double", modules)
    out = ask(kernel, op, "doubler", {"input": 21, "id": 7})
    assert out["id"] == 7 and out["output"]["doubled"] == 42
    pid = out["output"]["pid"]
    # the object's exception is an answer, and the agent serves on in the same process
    err = ask(kernel, op, "doubler", {"input": "boom", "id": 8})
    assert err == {"id": 8, "error": "ValueError: no boom please"}
    bad = ask(kernel, op, "doubler", "just text")
    assert bad["id"] is None and bad["error"].startswith('expected a message {"input"'), bad
    nid = ask(kernel, op, "doubler", {"id": 9})
    assert nid["id"] == 9 and "expected a message" in nid["error"]
    assert ask(kernel, op, "doubler", {"input": "ab", "id": 10})["output"] == {"doubled": "abab", "pid": pid}
    assert agent_row(op, "doubler")["restarts"] == 0
    # an async callable and a dotted attribute
    spawn_entry(kernel, op, "later", "plain_entry:later", modules)
    assert ask(kernel, op, "later", {"input": "x", "id": 1})["output"] == ["x", "x"]
    spawn_entry(kernel, op, "holder", "plain_entry:Holder.inner", modules)
    assert ask(kernel, op, "holder", {"input": 2, "id": 1})["output"]["doubled"] == 4


def test_reply_to_sends_the_answer_to_another_agent(kernel, op, modules):
    spawn_entry(kernel, op, "doubler", "plain_entry:double", modules)
    collector = kernel.client()
    collector.register_name("collector")
    assert op.send_message({"input": 5, "id": "r", "reply_to": "collector"}, to="doubler")["success"]
    msg = collector.wait_message(90)
    assert msg is not None, kernel.agent_log("doubler")
    assert msg["message"]["id"] == "r" and msg["message"]["output"]["doubled"] == 10
    assert op.wait_message(0.2) is None


def test_a_crash_mid_request_is_resumed_after_the_restart(kernel, op, modules):
    first = spawn_entry(kernel, op, "fragile", "plain_entry:crash_once", modules)
    out = ask(kernel, op, "fragile", {"input": "payload", "id": "c1"})
    assert out == {"id": "c1", "output": {"survived": "payload", "pid": out["output"]["pid"]}}, out
    row = agent_row(op, "fragile")
    assert row["restarts"] == 1 and row["pid"] != first["pid"], row
    # the message taken by the killed process came back to the new one (RECV lease), answered once
    assert op.wait_message(0.5) is None
    assert "request id='c1' came back after the agent died (start 2)" in kernel.agent_log("fragile")


def test_a_request_that_always_crashes_is_given_up(kernel, op, modules):
    spawn_entry(kernel, op, "poison", "plain_entry:always_crash", modules, "--max-attempts", "2")
    out = ask(kernel, op, "poison", {"input": 1, "id": "p"}, timeout=120)
    assert out == {"id": "p", "error": "the agent died 2 times running this request; it is not run again"}
    # two starts of the request, two crashes, then the answer from the third process
    assert agent_row(op, "poison")["restarts"] == 2


def test_once_runs_one_input_and_exits(kernel, op, modules):
    require("langgraph")
    inp = json.dumps({"messages": [{"role": "user", "content": "batch"}]})
    spawn_entry(kernel, op, "batch", "lg_entry:graph", modules, "--once", inp, restart="on-failure")
    wait_for(lambda: "agent exited:" in kernel.agent_log("batch"), 120, "batch to exit")
    log = kernel.agent_log("batch")
    assert "agent exited: exit code 0" in log and "restarting" not in log, log
    lines = [json.loads(x) for x in kernel.agent_log("batch").splitlines() if x.startswith('{"output"')]
    assert len(lines) == 1 and lines[0]["output"]["messages"][-1]["content"] == "forty-two", lines


def test_an_entry_that_cannot_be_loaded_says_why(kernel, op, modules):
    for name, entry, needle in [
        ("nomod", "no_such_module:x", "cannot import module 'no_such_module'"),
        ("noattr", "plain_entry:nope", "has no attribute 'nope'"),
        ("notrun", "plain_entry:not_runnable", "int is not runnable"),
        ("noform", "plain_entry", "must be module:attr"),
    ]:
        spawn_entry(kernel, op, name, entry, modules, restart="never")
        wait_for(lambda: "agent exited:" in kernel.agent_log(name), 60, f"{name} to exit")
        log = kernel.agent_log(name)
        assert "agent exited: exit code 2" in log and needle in log, log


def test_clove_run_entry_spawns_the_runner(kernel, op, modules):
    env = {**os.environ, "PYTHONPATH": str(SDK)}
    p = subprocess.run(
        ["node", str(CLOVE_JS), "--socket", kernel.socket, "run", "--entry", "plain_entry:double",
         "--python", PY, "--name", "cli-doubler", "--restart", "always", "--json"],
        cwd=modules, env=env, capture_output=True, text=True, timeout=60,
    )
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["name"] == "cli-doubler"
    assert ask(kernel, op, "cli-doubler", {"input": 4, "id": 1})["output"]["doubled"] == 8
    row = agent_row(op, "cli-doubler")
    assert row["restart_policy"] == "always", row
    bad = subprocess.run(
        ["node", str(CLOVE_JS), "--socket", kernel.socket, "run", "--entry", "nocolon"],
        cwd=str(REPO), capture_output=True, text=True, timeout=60,
    )
    assert bad.returncode == 2 and "module:attr" in bad.stderr, bad.stderr
