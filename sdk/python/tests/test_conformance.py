"""The shared SDK conformance suite (sdk/conformance/cases.json) against the Python SDK and a real
kernel. The TypeScript SDK runs the same file in sdk/typescript/conformance.test.ts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clove_sdk import CloveClient
from clove_sdk.errors import KernelError

CASES = json.loads((Path(__file__).resolve().parents[2] / "conformance" / "cases.json").read_text(encoding="utf-8"))

# SDK-neutral operation -> Python SDK call (strict clients: error replies raise KernelError).
OPS = {
    "hello": lambda c, a: c.hello(),
    "echo": lambda c, a: {"data": c.echo(a["data"])},
    "register": lambda c, a: c.register_name(a["name"]),
    "send": lambda c, a: c.send_message(a["message"], to_name=a["to_name"]),
    "recv": lambda c, a: c.recv_messages(a.get("max", 10), timeout=a["timeout_ms"] / 1000 if "timeout_ms" in a else None),
    "store": lambda c, a: c.store(a["key"], a["value"], scope=a.get("scope", "global"), ttl=a.get("ttl")),
    "fetch": lambda c, a: c.fetch(a["key"], scope=a.get("scope")),
    "delete": lambda c, a: c.delete_key(a["key"], scope=a.get("scope")),
    "keys": lambda c, a: c.list_keys(a.get("prefix", "")),
    "subscribe": lambda c, a: c.subscribe(a["events"]),
    "poll": lambda c, a: c.poll_events(a.get("max", 100), timeout=a["timeout_ms"] / 1000 if "timeout_ms" in a else None),
    "emit": lambda c, a: c.emit_event(a["event"], a.get("data")),
    "kill": lambda c, a: c.last_reply if c.kill(a["name"]) else c.last_reply,
}


def subst(value, suffix):
    return json.loads(json.dumps(value).replace("$name", suffix))


def matches(expected, got) -> bool:
    """Subset match: objects recursively, arrays element-wise (same length), scalars by equality."""
    if isinstance(expected, dict):
        return isinstance(got, dict) and all(k in got and matches(v, got[k]) for k, v in expected.items())
    if isinstance(expected, list):
        return isinstance(got, list) and len(got) == len(expected) and all(matches(e, g) for e, g in zip(expected, got))
    return expected == got


@pytest.mark.integration
@pytest.mark.parametrize("index", range(len(CASES["cases"])), ids=[c["name"] for c in CASES["cases"]])
def test_conformance(kernel, index):
    case = subst(CASES["cases"][index], f"py{index}")
    clients = {"a": kernel.client(strict=True), "b": kernel.client(strict=True)}
    if case.get("b_name"):
        clients["b"].register_name(case["b_name"])
    for step in case["steps"]:
        call = OPS[step["op"]]
        client: CloveClient = clients[step["client"]]
        if "error" in step:
            with pytest.raises(KernelError) as err:
                call(client, step.get("args", {}))
            assert err.value.code == step["error"], step
        else:
            reply = call(client, step.get("args", {}))
            if "expect" in step:
                assert matches(step["expect"], reply), f"{step['op']}: expected {step['expect']}, got {reply}"
