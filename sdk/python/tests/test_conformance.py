"""The shared SDK conformance suite (sdk/conformance/cases.json) against the Python SDK and a real
kernel. The TypeScript SDK runs the same file in sdk/typescript/conformance.test.ts."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from clove_sdk import CloveClient
from clove_sdk.errors import KernelError
from clove_sdk.protocol import OPCODES

CONFORMANCE = Path(__file__).resolve().parents[2] / "conformance"
AGENTS = CONFORMANCE / "agents"
CASES = json.loads((CONFORMANCE / "cases.json").read_text(encoding="utf-8"))


def _wait_s(a: dict) -> float | None:
    return a["timeout_ms"] / 1000 if "timeout_ms" in a else None


def _lifecycle(method: str):
    """kill()/pause()/resume() return a bool like the public SDK; the reply is in last_reply."""

    def call(c, a):
        getattr(c, method)(a["name"])
        return c.last_reply

    return call


def _exit(c, a):
    # The Python SDK returns True once the kernel answered (and closes the connection); the TS SDK
    # returns the raw text `goodbye`. Both are normalised to {"ok": ...}.
    return {"ok": c.exit()}


def _first_push(c, a):
    it = c.messages(timeout=a.get("timeout_ms", 10000) / 1000)
    if isinstance(it, dict):  # the mapping check's recording stand-in
        return it
    m = next(it, None)
    if m is None:
        raise AssertionError("no message pushed in time")
    return {"kind": "message", **m}


def _first_binary_push(c, a):
    m = _first_push(c, a)
    if "bytes" not in m:
        if m.get("kind") != "message":  # the mapping check's recording stand-in
            return m
        raise AssertionError("pushed message without bytes: the kernel did not push the binary envelope")
    return {**m, "bytes": bytes(m["bytes"]).decode("utf-8")}


def _think_stream(c, a):
    s = c.think_stream(a.get("prompt", ""))
    if isinstance(s, dict):  # the mapping check's recording stand-in
        return s
    return s.collect()


def _first_refusal(c, a):
    """The first SEND_REFUSED, through an on_refused() callback: a kept one comes at once, else the reader
    thread that on_refused() starts brings it; the callback is unregistered after."""
    got, came = [], threading.Event()

    def take(refusal):
        if not got:
            got.append(refusal)
            came.set()

    off = c.on_refused(take)
    if isinstance(off, dict):  # the mapping check's recording stand-in
        return off
    try:
        if not came.wait(a.get("timeout_ms", 10000) / 1000):
            raise AssertionError("no SEND_REFUSED in time")
    finally:
        off()
    return got[0]


def _get_perms(c, a):
    return c.get_permissions(agent_id=a.get("agent_id"))


# Contract opcode -> Python SDK call, through the method named in the contract's `sdk.python` (strict
# clients: error replies raise KernelError).
OPS = {
    "NOOP": lambda c, a: {"data": c.echo(a["data"])},
    "HELLO": lambda c, a: c.hello(),
    "EXIT": _exit,
    "HEARTBEAT": lambda c, a: c.heartbeat(),
    "SPAWN": lambda c, a: c.spawn(a.get("name"), a.get("script"), budgets=a.get("budgets"), node=a.get("node")),
    "KILL": _lifecycle("kill"),
    "RESTART": _lifecycle("restart"),
    "LIST": lambda c, a: c.list_agents(all_nodes=a.get("all_nodes", False)),
    "PAUSE": _lifecycle("pause"),
    "RESUME": _lifecycle("resume"),
    "SEND": lambda c, a: c.send_message(a["message"], to_name=a["to_name"]),
    "SEND_BATCH": lambda c, a: c.send_batch(a.get("messages", []), results=a.get("results", "all")),
    "PUSH": lambda c, a: _first_push(c, a),
    "PUSH_BINARY": lambda c, a: _first_binary_push(c, a),
    "SEND_REFUSED": _first_refusal,
    "RECV": lambda c, a: c.recv_messages(a.get("max", 10), timeout=_wait_s(a)),
    "BROADCAST": lambda c, a: c.broadcast(a.get("message"), include_self=a.get("include_self", False)),
    "REGISTER": lambda c, a: c.register_name(a["name"]),
    "STORE": lambda c, a: c.store(a["key"], a["value"], scope=a.get("scope", "global"), ttl=a.get("ttl")),
    "FETCH": lambda c, a: c.fetch(a["key"], scope=a.get("scope")),
    "DELETE": lambda c, a: c.delete_key(a["key"], scope=a.get("scope")),
    "KEYS": lambda c, a: c.list_keys(a.get("prefix", "")),
    "TASK_CREATE": lambda c, a: c.task_create(a.get("description"), a.get("subtasks"), pool=a.get("pool")),
    "TASK_ASSIGN": lambda c, a: c.task_assign(
        a.get("task_id"), agent_name=a.get("agent_name"), subtask=a.get("subtask"), payload=a.get("payload")
    ),
    "TASK_STATUS": lambda c, a: c.task_status(a.get("task_id")),
    "TASK_COMPLETE": lambda c, a: c.task_complete(
        a.get("task_id"), result=a.get("result"), subtask_id=a.get("subtask_id"), error=a.get("error")
    ),
    "TASK_LIST": lambda c, a: c.task_list(status=a.get("status"), mine=a.get("mine", False)),
    "GET_PERMS": _get_perms,
    "SET_PERMS": lambda c, a: c.set_permissions(
        permissions=a.get("permissions"), level=a.get("level"), agent_id=a.get("agent_id")
    ),
    "SUBSCRIBE": lambda c, a: c.subscribe(a["events"]),
    "UNSUBSCRIBE": lambda c, a: c.unsubscribe(a.get("events"), all=a.get("all", False)),
    "POLL_EVENTS": lambda c, a: c.poll_events(a.get("max", 100), timeout=_wait_s(a)),
    "EMIT": lambda c, a: c.emit_event(a["event"], a.get("data")),
    "METRICS_SYSTEM": lambda c, a: c.get_system_metrics(),
    "ASYNC_RESULTS": lambda c, a: c.async_results(a.get("max", 10), a["timeout_ms"] / 1000 if "timeout_ms" in a else None),
    "METRICS_AGENT": lambda c, a: c.get_agent_metrics(a.get("agent_id")),
    "METRICS_ALL_AGENTS": lambda c, a: c.get_all_agent_metrics(),
    "CLUSTER_NODES": lambda c, a: c.cluster_nodes(),
    "CLUSTER_STATUS": lambda c, a: c.cluster_status(),
    "TUNNEL_CONNECT": lambda c, a: c.tunnel_connect(a.get("relay_url"), a.get("machine_id"), a.get("token")),
    "TUNNEL_DISCONNECT": lambda c, a: c.tunnel_disconnect(),
    "TUNNEL_STATUS": lambda c, a: c.tunnel_status(),
    "TUNNEL_LIST_REMOTES": lambda c, a: c.tunnel_list_remotes(),
    "TUNNEL_CONFIG": lambda c, a: c.tunnel_config(**a),
    "WORLD_CREATE": lambda c, a: c.world_create(a.get("name"), a.get("config")),
    "WORLD_DESTROY": lambda c, a: c.world_destroy(a.get("world_id"), a.get("force", False)),
    "WORLD_LIST": lambda c, a: c.world_list(),
    "WORLD_JOIN": lambda c, a: c.world_join(a.get("world_id"), a.get("agent_id")),
    "WORLD_LEAVE": lambda c, a: c.world_leave(a.get("agent_id")),
    "WORLD_EVENT": lambda c, a: c.world_event(
        a.get("world_id"), a.get("event_type"), a.get("params"), a.get("clear", False)
    ),
    "WORLD_STATE": lambda c, a: c.world_state(a.get("world_id")),
    "WORLD_SNAPSHOT": lambda c, a: c.world_snapshot(a.get("world_id")),
    "WORLD_RESTORE": lambda c, a: c.world_restore(a.get("snapshot"), a.get("new_world_id")),
    "METRICS_CGROUP": lambda c, a: c.get_cgroup_metrics(a.get("cgroup_path")),
    "SET_QUOTA": lambda c, a: c.set_quota(
        a.get("quotas", {}), agent_id=a.get("agent_id"), name=a.get("name"), service=a.get("service")
    ),
    "GET_QUOTA": lambda c, a: c.get_quota(a.get("agent_id"), a.get("name"), a.get("service"), a.get("all", False)),
    "EXEC": lambda c, a: c.exec(a["command"]),
    "READ": lambda c, a: c.read_file(a.get("path", "")),
    "WRITE": lambda c, a: c.write_file(a.get("path", ""), a.get("content", "")),
    "HTTP": lambda c, a: c.http(a.get("url", ""), a.get("method", "GET")),
    "THINK": lambda c, a: c.think(a.get("prompt", "")),
    "LLM_REPORT": lambda c, a: c.llm_report(a.get("tokens", 0)),
    "THINK_STREAM": _think_stream,
    "THINK_STREAM_NEXT": lambda c, a: c.think_stream_next(a.get("stream_id"), a["wait_ms"] / 1000 if "wait_ms" in a else None),
    "THINK_STREAM_CANCEL": lambda c, a: c.think_stream_cancel(a.get("stream_id")),
    "MCP_LIST_TOOLS": lambda c, a: c.mcp_list_tools(a.get("server")),
    "MCP_CALL": lambda c, a: c.mcp_call(a.get("server", ""), a.get("tool", ""), a.get("arguments")),
    "GET_AUDIT_LOG": lambda c, a: c.get_audit_log(a.get("category"), limit=a.get("limit", 100)),
    "SET_AUDIT_CONFIG": lambda c, a: c.set_audit_config(**a),
    "RECORD_START": lambda c, a: c.start_recording(),
    "RECORD_STOP": lambda c, a: c.stop_recording(),
    "RECORD_STATUS": lambda c, a: c.get_recording_status(a.get("export", False)),
    "REPLAY_START": lambda c, a: c.start_replay(a.get("recording_data", "")),
    "REPLAY_STATUS": lambda c, a: c.get_replay_status(),
    "STEP_BEGIN": lambda c, a: c.step_begin(a["key"], a.get("fresh", False), a.get("on_divergence")),
    "STEP_END": lambda c, a: c.step_end(a.get("key"), a.get("complete", True), a.get("clear", False)),
    "STEP_STATUS": lambda c, a: c.step_status(a.get("key"), a.get("agent_id"), a.get("name")),
    "STEP_CLEAR": lambda c, a: c.step_clear(a.get("key"), a.get("agent_id"), a.get("name")),
}


def subst(value, suffix):
    """``$agents`` and ``$name`` in every string of a case."""
    if isinstance(value, str):
        return value.replace("$agents", str(AGENTS)).replace("$name", suffix)
    if isinstance(value, list):
        return [subst(v, suffix) for v in value]
    if isinstance(value, dict):
        return {k: subst(v, suffix) for k, v in value.items()}
    return value


def resolve_vars(value, saved: dict):
    """``{"$var": name}`` anywhere in value -> the value a previous step saved under that name."""
    if isinstance(value, list):
        return [resolve_vars(v, saved) for v in value]
    if isinstance(value, dict):
        if list(value) == ["$var"]:
            assert value["$var"] in saved, f"$var {value['$var']} was not saved by an earlier step"
            return saved[value["$var"]]
        return {k: resolve_vars(v, saved) for k, v in value.items()}
    return value


def mismatch(expected, got, at="$") -> str | None:
    """The suite's subset match (the same rules as the TypeScript runner): objects recursively (only an
    object matches an object), arrays element-wise with the same length, ``{"$contains": x}`` an array with
    an element matching x, scalars by strict equality (a bool never equals a number). Returns where the
    first mismatch is, or None."""
    if isinstance(expected, dict):
        if list(expected) == ["$contains"]:
            if not isinstance(got, list):
                return f"{at}: expected an array, got {got!r}"
            if any(mismatch(expected["$contains"], g, at) is None for g in got):
                return None
            return f"{at}: no element matches {expected['$contains']!r}"
        if not isinstance(got, dict):
            return f"{at}: expected an object, got {got!r}"
        for k, v in expected.items():
            if k not in got:
                return f"{at}.{k}: missing"
            m = mismatch(v, got[k], f"{at}.{k}")
            if m:
                return m
        return None
    if isinstance(expected, list):
        if not isinstance(got, list) or len(got) != len(expected):
            return f"{at}: expected an array of {len(expected)}, got {got!r}"
        for i, (e, g) in enumerate(zip(expected, got)):
            m = mismatch(e, g, f"{at}[{i}]")
            if m:
                return m
        return None
    if expected == got and isinstance(expected, bool) == isinstance(got, bool):
        return None
    return f"{at}: expected {expected!r}, got {got!r}"


def pick(reply, dotted: str):
    for k in dotted.split("."):
        reply = reply.get(k) if isinstance(reply, dict) else None
    return reply


# ---------------------------------------------------------------- coverage of the contract

USED = {step["op"] for case in CASES["cases"] for step in case["steps"]}


def test_every_implemented_opcode_has_a_case():
    implemented = {name for name, (_family, status, _method) in OPCODES.items() if status == "implemented"}
    assert implemented
    assert sorted(implemented - USED) == []


def test_every_op_is_a_contract_opcode_documented_and_mapped():
    assert sorted(USED - set(OPCODES)) == []
    assert sorted(USED - set(OPS)) == []
    assert sorted(USED - set(CASES["operations"])) == []


class _Recorder:
    """Stands in for a client and records which methods a mapping calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.last_reply = None

    def __getattr__(self, name):
        def method(*args, **kwargs):
            self.calls.append(name)
            return {}

        return method


@pytest.mark.parametrize("op", sorted(OPS))
def test_mapping_uses_the_contract_method(op):
    assert op in OPCODES, f"{op} is not a contract opcode"
    method = OPCODES[op][2]
    assert callable(getattr(CloveClient, method, None)), f"CloveClient has no {method}()"
    rec = _Recorder()
    # the arguments the mappings index unconditionally (cases.json always gives them)
    args = {"data": "", "name": "x", "to_name": "x", "message": 1, "key": "k", "value": 1, "events": ["e"]}
    args.update(event="e", command="true")
    OPS[op](rec, args)
    assert rec.calls == [method], op


# ---------------------------------------------------------------- the cases


@pytest.mark.integration
@pytest.mark.parametrize("index", range(len(CASES["cases"])), ids=[c["name"] for c in CASES["cases"]])
def test_conformance(any_path_kernel, index):
    kernel = any_path_kernel
    case = subst(CASES["cases"][index], f"py{index}")
    clients = {"a": kernel.client(strict=True), "b": kernel.client(strict=True)}
    saved: dict = {}
    spawned: set[str] = set()
    try:
        if case.get("b_name"):
            clients["b"].register_name(case["b_name"])
        for step in case["steps"]:
            call = OPS[step["op"]]
            client: CloveClient = clients[step["client"]]
            args = resolve_vars(step.get("args", {}), saved)
            if "error" in step:
                with pytest.raises(KernelError) as err:
                    call(client, args)
                assert err.value.code == step["error"], step
            else:
                reply = call(client, args)
                if step["op"] == "SPAWN":
                    spawned.add(args["name"])
                elif step["op"] == "KILL":
                    spawned.discard(args["name"])
                if "expect" in step:
                    m = mismatch(resolve_vars(step["expect"], saved), reply)
                    assert m is None, f"{step['op']}: {m}\nreply: {reply}"
                for var, dotted in step.get("save", {}).items():
                    saved[var] = pick(reply, dotted)
                    assert saved[var] is not None, f"{step['op']}: nothing at {dotted} to save as {var}: {reply}"
    finally:
        # a failed case does not leave its agents running (the kernel fixture stops the rest)
        for name in spawned:
            try:
                clients["a"].kill(name, grace_ms=0, check=False)
            except Exception:  # noqa: BLE001 - best effort cleanup
                pass
