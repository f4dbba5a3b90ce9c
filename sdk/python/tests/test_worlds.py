"""Worlds through the Python SDK (docs/worlds.md), against a real kernel and a real Python agent: an
agent spawned into a world reads its virtual file and gets its mocked HTTP answer; chaos and errors."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

pytestmark = pytest.mark.integration

# Reads the world's file and URL and reports both to the operator (REPORT_TO).
AGENT = """
import os
from clove_sdk import CloveClient
with CloveClient(timeout=60) as c:
    f = c.read_file("/etc/motd", check=False)
    h = c.call_json(0x50, {"url": "https://api.test/ping"}, check=False)
    w = c.write_file("/etc/motd", "changed", check=False)
    c.send_message({"file": f, "http": h, "write": w}, to=int(os.environ["REPORT_TO"]))
    c.wait_message(timeout=60)
"""


@pytest.fixture
def agent_script():
    d = tempfile.mkdtemp(prefix="clvworld", dir="/tmp")
    os.chmod(d, 0o755)
    path = os.path.join(d, "world_agent.py")
    with open(path, "w", encoding="utf-8") as f:
        f.write(AGENT)
    os.chmod(path, 0o644)
    yield path
    shutil.rmtree(d, ignore_errors=True)


def test_an_agent_spawned_into_a_world_is_served_by_it(agent_script, op):
    config = {
        "seed": 3,
        "virtual_filesystem": {"initial_files": {"/etc/motd": {"content": "welcome", "mode": "r"}}},
        "network": {"mode": "mock", "mock_responses": {"https://api.test/*": {"status": 200, "body": "pong"}}},
    }
    w = op.world_create("py world", config)
    assert w["success"] is True and w["seed"] == 3, w
    me = op.hello()["agent_id"]
    a = op.spawn("py-world-agent", agent_script, env={"REPORT_TO": str(me)}, world=w["world_id"])
    assert a["success"] is True, a
    m = op.wait_message(timeout=30)
    assert m is not None
    got = m["message"]
    assert got["file"]["content"] == "welcome" and got["file"]["virtual"] is True
    assert got["http"]["body"] == "pong" and got["http"]["mocked"] is True
    assert got["write"]["success"] is False and got["write"]["errno"] == "EROFS"
    st = op.world_state(w["world_id"])["state"]
    assert st["agents"] == [a["id"]] and st["vfs_metrics"]["read_count"] == 1
    ev = op.world_event(w["world_id"], "disk_fail", {"duration_ms": 60000})
    assert ev["success"] is True and ev["event_id"] == 1
    assert op.world_event(w["world_id"], "disk_fail", clear=True)["cleared"] == 1
    bad = op.world_event(w["world_id"], "volcano")
    assert bad["success"] is False and bad["code"] == "invalid_request"
    snap = op.world_snapshot(w["world_id"])["snapshot"]
    assert snap["vfs"]["files"]["/etc/motd"]["content"] == "welcome"
    op.kill(a["id"])
    r = op.world_restore(snap)
    assert r["success"] is True and r["members_restored"] == [], r
    assert op.world_destroy(r["world_id"])["success"] is True
    assert op.world_destroy(w["world_id"])["success"] is True
    assert op.world_list()["count"] == 0
