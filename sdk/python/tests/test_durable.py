"""Durable execution (docs/durable.md) through the Python SDK on a real kernel: real sandboxed agents
(tests/agents/durable_agent.py) run journaled steps (``@durable_step``, ``with client.step(...)``), THINK
goes to the local provider stub, and the agents are SIGKILLed and restarted by their restart policy.

The issue's test: an agent is killed after 3 of the 5 THINK calls of a journaled step; after its restart
the provider receives only calls 4 and 5, and the agent's result is the one an uninterrupted run gets.
"""

from __future__ import annotations

import hashlib
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from clove_sdk import CloveClient, JournalDivergedError, durable_step
from clove_sdk.errors import ConnectionClosedError
from conftest import AGENTS
from provider_stub import Reply, last_text

pytestmark = pytest.mark.integration

AGENT = str(AGENTS / "durable_agent.py")
KEY = "summarize:doc-17"


def until(fn, timeout: float = 60.0, what: str = "condition"):
    """Polls ``fn`` until it returns something truthy (or fails after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def note(body: dict) -> Reply:
    """The stub's answer: a function of the prompt alone, so that every run asks and gets the same."""
    return Reply(content="note-" + hashlib.sha256(last_text(body).encode()).hexdigest()[:10])


def spawn(op: CloveClient, name: str, *args: str, **kw) -> int:
    r = op.spawn(name, AGENT, args=list(args), check=True, **kw)
    return r["id"]


def result_of(op: CloveClient, kernel, name: str, timeout: float = 60.0) -> dict:
    def ready():
        r = op.fetch(f"durable-result:{name}", scope="global")
        return r.get("value") if r.get("exists") else None

    try:
        return until(ready, timeout, f"the result of {name}")
    except AssertionError:
        raise AssertionError(f"no result from {name}:\n{kernel.agent_log(name)}\n{kernel.log()}") from None


def agent(op: CloveClient, name: str) -> dict:
    return next(a for a in op.list_agents() if a["name"] == name)


def prompts(stub, start: int = 0) -> list[str]:
    return [last_text(r) for r in stub.requests[start:]]


def test_killed_after_3_of_5_thinks_the_restart_makes_only_calls_4_and_5(llm_kernel, provider_stub):
    provider_stub.responder = note
    op = llm_kernel.client(timeout=30)
    spawn(op, "durable-crash", "crash", "doc-17", restart_policy="on-failure")

    # The first process dies (SIGKILL, by its own hand) right after THINK 3; the restarted one waits for "go".
    until(lambda: agent(op, "durable-crash")["restarts"] >= 1, what="the restart")
    assert len(provider_stub.requests) == 3
    before = prompts(provider_stub)
    assert [p.split(":")[0] for p in before] == ["step 1", "step 2", "step 3"]

    op.send_message("go", to_name="durable-crash", check=True)
    crashed = result_of(op, llm_kernel, "durable-crash")
    assert len(provider_stub.requests) == 5
    after = prompts(provider_stub, 3)
    assert [p.split(":")[0] for p in after] == ["step 4", "step 5"]

    # An uninterrupted run of the same code (another agent: a journal of its own) gets the same result.
    spawn(op, "durable-plain", "plain", "doc-17")
    plain = result_of(op, llm_kernel, "durable-plain")
    assert crashed["notes"] == plain["notes"]
    assert len(set(plain["notes"])) == 5
    assert prompts(provider_stub, 5) == before + after  # the same 5 calls, all live

    # Replayed calls were not counted again, and each was audited as replayed.
    a = agent(op, "durable-crash")
    assert op.get_permissions(a["id"])["permissions"]["llm"]["calls_made"] == 5
    audit = op.get_audit_log("RESOURCE", agent_id=a["id"], limit=100)["entries"]
    replayed = [e["details"] for e in audit if e["event_type"] == "STEP_REPLAYED"]
    assert [(d["syscall"], d["key"], d["position"]) for d in replayed] == [("THINK", KEY, i) for i in (1, 2, 3)]
    st = op.step_status(name="durable-crash", key=KEY)
    assert st["owner"] == "durable-crash#1"
    assert st["steps"][0]["state"] == "completed" and st["steps"][0]["entries"] == 5

    # It ends (exit 0, not restarted): its identity ends, and its journal with it.
    op.send_message("bye", to_name="durable-crash", check=True)
    until(lambda: all(x["name"] != "durable-crash" for x in op.list_agents()), what="the agent to end")
    assert op.step_status(name="durable-crash")["code"] == "not_found"


def test_a_differing_call_is_journal_diverged_or_truncated(llm_kernel, provider_stub):
    provider_stub.responder = note
    op = llm_kernel.client(timeout=30)
    spawn(op, "durable-div", "diverge", "-")
    out = result_of(op, llm_kernel, "durable-div")
    assert out["first_state"] == "new"
    assert out["diverged"] == {
        "code": "journal_diverged",
        "key": "div",
        "position": 1,
        "journaled_op": "THINK",
        "op": "THINK",
    }
    assert out["truncate_state"] == "in_progress"  # left in progress by the failed block
    assert out["second"] != out["first"]
    assert [last_text(r) for r in provider_stub.requests] == ["one", "two"]  # the diverging call never went out
    assert out["status"] == [
        {**out["status"][0], "key": "div", "state": "completed", "entries": 1, "open": False},
    ]


class _Counter(BaseHTTPRequestHandler):
    hits: list[str] = []

    def log_message(self, *_a) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        type(self).hits.append(self.path)
        body = f"hit {len(type(self).hits)}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_exec_and_http_in_a_step_are_not_made_again_after_a_crash(kernel):
    _Counter.hits = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Counter)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        op = kernel.client(timeout=30)
        spawn(
            op,
            "durable-fx",
            "effects",
            "-",
            f"http://127.0.0.1:{port}/effect",
            restart_policy="on-failure",
            permissions={"network": [f"127.0.0.1:{port}"], "http_methods": ["GET"]},
        )
        out = result_of(op, kernel, "durable-fx")
        assert agent(op, "durable-fx")["restarts"] == 1
        assert out == {"count": "1", "body": "hit 1", "file": "ran\n"}
        assert _Counter.hits == ["/effect"]
        op.send_message("bye", to_name="durable-fx", check=True)
    finally:
        server.shutdown()
        server.server_close()


def test_another_agent_can_neither_read_nor_replay_this_agents_journal(llm_kernel, provider_stub):
    provider_stub.responder = note
    op = llm_kernel.client(timeout=30)
    spawn(op, "durable-owner", "stay", "doc-17")
    owner = result_of(op, llm_kernel, "durable-owner")
    assert len(provider_stub.requests) == 5

    sid = spawn(op, "durable-snoop", "snoop", "durable-owner")
    snoop = result_of(op, llm_kernel, "durable-snoop")
    assert snoop["status"] == "permission_denied" and snoop["clear"] == "permission_denied"
    # The same key is the snooper's own journal: its calls reach the provider, the owner's stay its own.
    assert len(provider_stub.requests) == 10
    assert snoop["notes"] == owner["notes"]
    assert op.step_status(name="durable-owner", key=KEY)["steps"][0]["entries"] == 5
    denied = op.get_audit_log("SECURITY", agent_id=sid, limit=100)["entries"]
    assert [e["details"]["syscall"] for e in denied if e["event_type"] == "PERMISSION_DENIED"] == [
        "STEP_STATUS",
        "STEP_CLEAR",
    ]
    op.send_message("bye", to_name="durable-owner", check=True)


def test_the_sdk_step_and_decorator_on_an_operator_connection(op):
    """Operators journal under `operator`: the context manager and the decorator without an agent."""
    calls = []

    @durable_step("op:{name}")
    def stamp(c: CloveClient, name: str) -> str:
        calls.append(name)
        return c.exec("date +%s%N", check=True)["stdout"]

    first = stamp(op, "stamp")
    assert stamp(op, "stamp") == first  # replayed: the same nanoseconds
    assert calls == ["stamp", "stamp"]
    assert op.step_status("op:stamp")["steps"][0]["state"] == "completed"

    # An exception leaves the step in progress, and propagates.
    with pytest.raises(RuntimeError):
        with op.step("op:fails"):
            op.exec("true", check=True)
            raise RuntimeError("boom")
    assert op.step_status("op:fails")["steps"][0]["state"] == "in_progress"

    with op.step("op:fails") as begun:
        assert begun["state"] == "in_progress" and begun["entries"] == 1
        with pytest.raises(JournalDivergedError):
            op.exec("false", check=True)

    # A connection lost inside a step: later calls would be unjournaled, so they raise instead.
    with pytest.raises(ConnectionClosedError):
        with op.step("op:lost"):
            op.disconnect()
            op.exec("true")
    assert op.exec("true")["success"] is True  # outside the step, the client reconnects
    assert op.step_clear()["owner"] == "operator"
