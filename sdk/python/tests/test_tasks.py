"""The tasks family through the Python SDK, against a real kernel and real Python agents (the seed's
orchestration: a coordinator hands subtasks to workers, workers complete them)."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time

import pytest

pytestmark = pytest.mark.integration

# A worker: takes its subtask from its mailbox, reports it to the coordinator (REPORT_TO, an id) and
# completes it when told `go` (at once when AUTO is set).
WORKER = """
import os, signal
from clove_sdk import CloveClient
signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
me = os.environ["CLOVE_AGENT_NAME"]
report = int(os.environ["REPORT_TO"])
auto = os.environ.get("AUTO") == "1"
with CloveClient(timeout=60) as c:
    held = None
    while True:
        m = c.wait_message(timeout=None)
        body = m["message"]
        kind = body.get("type") if isinstance(body, dict) else None
        if kind == "task_assigned":
            held = body
            c.send_message({"took": body, "by": me}, to=report)
        if (kind == "go" or (auto and kind == "task_assigned")) and held:
            r = c.task_complete(held["task_id"], result={"by": me, "subtask": held["subtask"]}, check=False)
            c.send_message({"done": held["subtask_id"], "by": me, "reply": r}, to=report)
            held = None
"""


@pytest.fixture
def worker_script():
    """The worker's script in a directory of its own, readable by the agents' uids."""
    d = tempfile.mkdtemp(prefix="clvtask", dir="/tmp")
    os.chmod(d, 0o755)
    path = os.path.join(d, "task_worker.py")
    with open(path, "w", encoding="utf-8") as f:
        f.write(WORKER)
    os.chmod(path, 0o644)
    yield path
    shutil.rmtree(d, ignore_errors=True)


def _spawn(script: str, op, name: str, auto: bool = False) -> dict:
    me = op.hello()["agent_id"]
    env = {"REPORT_TO": str(me), "AUTO": "1" if auto else "0"}
    r = op.spawn(name, script, env=env)
    assert r and r.get("success"), r
    return r


class Inbox:
    """The coordinator's messages, waited for in the kernel; those not yet asked for are kept."""

    def __init__(self, client) -> None:
        self.client = client
        self.kept: list[dict] = []

    def wait(self, pred, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for m in self.kept:
                if pred(m):
                    self.kept.remove(m)
                    return m
            left = deadline - time.monotonic()
            assert left > 0, f"no matching message; kept {self.kept!r}"
            m = self.client.wait_message(timeout=min(1.0, left))
            if m is not None:
                self.kept.append(m)


def _took(name):
    return lambda m: isinstance(m["message"], dict) and m["message"].get("by") == name and "took" in m["message"]


def _done(name):
    return lambda m: isinstance(m["message"], dict) and m["message"].get("by") == name and "done" in m["message"]


def test_seed_orchestration_create_assign_complete_status(worker_script, op):
    inbox = Inbox(op)
    w1 = _spawn(worker_script, op, "py-w1", auto=True)["id"]
    task = op.task_create("Build and test", ["lint"], metadata={"ticket": 1})
    assert task["success"] is True and isinstance(task["id"], int)
    assert task["task"]["subtasks"][0]["status"] == "pending"
    a = op.task_assign(task["id"], agent_id=w1, subtask="run tests", payload={"suite": "unit"})
    assert a["success"] is True and a["agent_name"] == "py-w1", a
    took = inbox.wait(_took("py-w1"))["message"]["took"]
    assert took["type"] == "task_assigned" and took["subtask"] == "run tests" and took["payload"] == {"suite": "unit"}
    done = inbox.wait(_done("py-w1"))["message"]
    assert done["reply"]["success"] is True and done["reply"]["task_status"] == "running"  # "lint" is pending
    lint = task["task"]["subtasks"][0]["id"]
    assert op.task_assign(task["id"], agent_name="py-w1", subtask_id=lint)["success"] is True
    inbox.wait(_done("py-w1"))
    st = op.task_status(task["id"])
    assert st["status"] == "completed", st
    assert st["results"] == {
        str(a["subtask_id"]): {"by": "py-w1", "subtask": "run tests"},
        str(lint): {"by": "py-w1", "subtask": "lint"},
    }
    ended = inbox.wait(lambda m: isinstance(m["message"], dict) and m["message"].get("type") == "task_completed")
    assert ended["message"]["task_id"] == task["id"] and ended["from_name"] == "kernel"
    listed = op.task_list(status="completed")
    assert task["id"] in [t["id"] for t in listed["tasks"]]


def test_sigkilled_worker_subtask_goes_to_another_worker(worker_script, op):
    inbox = Inbox(op)
    w1 = _spawn(worker_script, op, "pool-1")
    _spawn(worker_script, op, "pool-2")
    task = op.task_create("Build and test", pool="pool-*")
    a = op.task_assign(task["id"], agent_id=w1["id"], subtask="run tests")
    inbox.wait(_took("pool-1"))
    os.kill(w1["pid"], signal.SIGKILL)
    took = inbox.wait(_took("pool-2"))["message"]["took"]
    assert took["subtask_id"] == a["subtask_id"] and took["attempt"] == 2
    op.send_message({"type": "go"}, to_name="pool-2")
    inbox.wait(_done("pool-2"))
    st = op.task_status(task["id"])
    assert st["status"] == "completed", st
    sub = st["task"]["subtasks"][0]
    assert sub["assignee_name"] == "pool-2" and sub["attempts"] == 2 and sub["result"]["by"] == "pool-2"


def test_errors_are_replies_or_raised_when_strict(kernel, op):
    r = op.task_status(123456)
    assert r["success"] is False and r["code"] == "not_found"
    t = op.task_create("nobody to do it")
    r = op.task_assign(t["id"], subtask="x")
    assert r["success"] is False and r["code"] == "not_found"
    r = op.task_complete(t["id"], subtask_id=99999, result=1)
    assert r["success"] is False and r["code"] == "not_found"
    strict = kernel.client(strict=True)
    with pytest.raises(Exception) as e:
        strict.task_status(123456)
    assert "not found" in str(e.value)
