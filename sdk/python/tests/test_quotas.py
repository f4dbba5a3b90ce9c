"""Quotas through the Python SDK on a real kernel: spawn(quotas=...), set_quota, get_quota, and the usage in
the metrics replies (docs/protocol.md §4b)."""

from __future__ import annotations

import pytest

from conftest import AGENTS

pytestmark = pytest.mark.integration

ECHO = str(AGENTS / "echo_agent.py")


def test_spawn_with_quotas_then_set_and_get(op):
    quotas = {"exec_count": {"limit": 4}, "cpu_time": {"limit": 600000, "policy": "pause"}}
    r = op.spawn("py-quota", ECHO, quotas=quotas)
    agent = r["id"]
    q = op.get_quota(agent_id=agent)
    assert q["success"] is True and q["name"] == "py-quota"
    assert q["quotas"]["exec_count"] == {"limit": 4, "policy": "deny", "used": 0, "exceeded": False}
    assert q["quotas"]["cpu_time"]["policy"] == "pause"
    names = {"memory", "cpu_time", "wall_time", "llm_calls", "llm_tokens", "network_bytes", "exec_count", "mcp_calls"}
    assert set(q["usage"]) == names

    s = op.set_quota({"exec_count": None, "llm_calls": {"limit": 7}}, name="py-quota")
    assert "exec_count" not in s["quotas"]
    assert s["quotas"]["llm_calls"]["limit"] == 7
    assert op.get_quota(name="py-quota")["quotas"]["llm_calls"]["policy"] == "deny"

    bad = op.set_quota({"memory": {"limit": 1, "policy": "deny"}}, agent_id=agent)
    assert bad["success"] is False and bad["code"] == "invalid_request"

    m = op.get_agent_metrics(agent)
    assert set(m["metrics"]["quotas"]) == names
    assert m["metrics"]["quotas"]["cpu_time"]["limit"] == 600000
    assert m["metrics"]["quotas"]["llm_calls"] == {"used": 0, "limit": 7, "policy": "deny", "exceeded": False}
    assert m["metrics"]["quotas"]["exec_count"] == {"used": 0}

    svc = {"project": "py", "service": "web"}
    assert op.set_quota({"network_bytes": {"limit": 1000}}, service=svc)["quotas"]["network_bytes"]["used"] == 0
    every = op.get_quota(all=True)
    assert any(a["agent_id"] == agent for a in every["agents"])
    assert any(x["service"] == svc for x in every["services"])
    op.kill(agent_id=agent)
