"""Integration tests against a REAL kernel (node bin/clove.js kernel), per docs/protocol.md.

Skipped with "KERNEL NOT READY" until bin/clove.js and dist/ exist. Every test gets a fresh kernel.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from clove_sdk import (
    CloveClient,
    EncodedMessage,
    ConnectionClosedError,
    InvalidRequestError,
    InvalidStateError,
    KernelError,
    MailboxFullError,
    NameTakenError,
    NotFoundError,
    NotSupportedError,
    SyscallOp,
    UnknownOpcodeError,
)

from conftest import AGENTS, SDK, count_frames

pytestmark = pytest.mark.integration

ECHO = str(AGENTS / "echo_agent.py")


# ---------------------------------------------------------------- helpers


def spawn_echo(kernel, op, name, **kw):
    r = op.spawn(name, ECHO, **kw)
    assert isinstance(r, dict) and r.get("success") is True, f"SPAWN {name}: {r}\n{kernel.log()}"
    assert isinstance(r.get("id"), int) and r["id"] >= 1, r
    assert r.get("name") == name, r
    assert isinstance(r.get("pid"), int) and r["pid"] > 0, r
    assert r.get("status") == "running", r
    return r


def ask(kernel, op, to, body, timeout=15.0):
    """Sends body to an agent (name or id) and returns the agent's reply message."""
    r = op.send_message(body, to=to)
    assert r.get("success") is True, f"SEND to {to}: {r}"
    msg = op.wait_message(timeout)
    assert msg is not None, f"no reply from agent {to} within {timeout}s\n{kernel.agent_log(str(to))}\n{kernel.log()}"
    return msg


def wait_event(op, pred, timeout=10.0):
    """Polls events (blocking in the kernel) until one matches pred; returns it and all events seen."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = op.poll_events(100, timeout=max(0.05, deadline - time.monotonic()))
        assert r.get("success") is True, r
        for ev in r.get("events", []):
            seen.append(ev)
            if pred(ev):
                return ev, seen
    raise AssertionError(f"no matching event within {timeout}s; saw {seen}")


def agent_entry(op, agent_id):
    for a in op.list_agents():
        if a.get("id") == agent_id:
            return a
    return None


def wait_state(op, agent_id, states, timeout=10.0):
    deadline = time.monotonic() + timeout
    entry = None
    while time.monotonic() < deadline:
        entry = agent_entry(op, agent_id)
        if entry is None and None in states:
            return None
        if entry is not None and entry.get("state") in states:
            return entry
        time.sleep(0.05)
    raise AssertionError(f"agent {agent_id} not in {states} after {timeout}s: {entry}")


# ---------------------------------------------------------------- core


def test_hello_operator(op, kernel):
    r = op.hello()
    assert r["success"] is True
    assert r["protocol_version"] == 1
    assert isinstance(r.get("kernel_version"), str)
    assert r["role"] == "operator"
    assert isinstance(r["agent_id"], int) and r["agent_id"] >= 1
    assert isinstance(r.get("features"), dict)
    assert op.agent_id == r["agent_id"] and op.role == "operator"
    # one id space, never reused: a second connection gets a fresh id
    other = kernel.client()
    assert other.hello()["agent_id"] != r["agent_id"]


def test_echo(op):
    assert op.echo("hello clove") == "hello clove"
    assert op.echo("") == ""
    assert op.echo("é€ 🎉") == "é€ 🎉"
    raw = bytes(range(256))
    assert op.echo(raw) == raw
    big = "x" * 200_000
    assert op.echo(big) == big


def test_pipelined_requests_are_answered_in_order(op):
    for i in range(5):
        op.send(SyscallOp.NOOP, f"n{i}")
    replies = [op.recv() for _ in range(5)]
    assert [f.payload_str for f in replies] == [f"n{i}" for i in range(5)]
    assert all(f.opcode == 0 for f in replies)
    assert op.hello()["success"] is True  # still in step


def test_heartbeat(op):
    assert op.heartbeat()["success"] is True


def test_context_manager_closes_socket(kernel):
    with CloveClient(kernel.socket, timeout=5) as c:
        assert c.hello()["success"] is True
        sock = c._sock
        assert sock is not None
    assert c._sock is None and not c.connected
    assert sock.fileno() == -1  # really closed
    # a later call reconnects lazily (a new connection)
    assert c.echo("again") == "again"
    c.close()


def test_exit_says_goodbye_and_closes(op):
    assert op.exit() is True
    assert not op.connected


# ---------------------------------------------------------------- agents and IPC


def test_spawned_agent_environment(kernel, op):
    tmp = os.path.join(kernel.root, "cwd")
    os.mkdir(tmp)
    r = spawn_echo(kernel, op, "envy", args=["a1", "a2"], env={"TEST_EXTRA": "yes"}, cwd=tmp)
    info = ask(kernel, op, "envy", {"cmd": "info"})["message"]
    assert info["hello"]["role"] == "agent", info
    assert info["hello"]["agent_id"] == r["id"], info  # the connection IS the spawned agent
    assert info["hello"].get("name") == "envy", info
    assert info["env"].get("CLOVE_AGENT_ID") == str(r["id"]), info
    assert info["env"].get("CLOVE_AGENT_NAME") == "envy", info
    assert info["env"].get("CLOVE_SOCKET"), info
    assert info["env"]["CLOVE_SOCKET"] != kernel.socket, "agents get the agent socket, not the operator socket"
    assert info["env"].get("TEST_EXTRA") == "yes", info
    assert info["argv"] == ["a1", "a2"], info
    assert os.path.realpath(info["cwd"]) == os.path.realpath(tmp), info
    assert info["imported_via"] == "PYTHONPATH", f"kernel did not put sdk/python on PYTHONPATH: {info['pythonpath']!r}"
    assert str(SDK) in info["pythonpath"].split(os.pathsep), info
    assert info["pid"] == r["pid"] or r["pid"] > 0


def test_send_recv_round_trip(kernel, op):
    me = op.hello()["agent_id"]
    r = spawn_echo(kernel, op, "echo1")
    # by name
    reply = ask(kernel, op, "echo1", {"n": 1, "text": "hi"})
    assert reply["from"] == r["id"]
    assert reply["from_name"] == "echo1"
    assert reply["message"]["echo"] == {"n": 1, "text": "hi"}
    assert reply["message"]["from"] == me  # the agent saw the operator's id as sender
    assert isinstance(reply.get("age_ms"), int)
    # by id, and any JSON value
    r2 = op.send_message([1, "two", None], to=r["id"])
    assert r2["success"] is True and r2["delivered_to"] == r["id"]
    reply2 = op.wait_message(15)
    assert reply2 is not None and reply2["message"]["echo"] == [1, "two", None]
    # seq is per sender and strictly increasing (ext)
    s1, s2 = reply["message"]["seq"], reply2["message"]["seq"]
    assert isinstance(s1, int) and isinstance(s2, int) and s2 > s1
    assert isinstance(reply["seq"], int) and reply2["seq"] > reply["seq"]


def test_many_messages_keep_order(kernel, op):
    spawn_echo(kernel, op, "echo2")
    for i in range(20):
        assert op.send_message({"i": i}, to_name="echo2")["success"] is True
    got = []
    deadline = time.monotonic() + 20
    while len(got) < 20 and time.monotonic() < deadline:
        r = op.recv_messages(10, timeout=2)
        got += [m["message"]["echo"]["i"] for m in r["messages"]]
    assert got == list(range(20))


def test_encoded_messages_arrive_as_their_values(any_path_kernel):
    a = any_path_kernel.client()
    b = any_path_kernel.client()
    b.register_name("enc-peer")
    value = {"n": 1, "s": "é\"\\", "list": [1.5, None]}
    once = EncodedMessage(value)
    assert a.send_message(once, to="enc-peer")["success"] is True
    r = a.send_batch(
        [{"to": "enc-peer", "message": once}, {"to": "nobody-enc", "message": once}, {"to": "enc-peer", "message": once}],
        results="refused",
    )
    assert r["delivered_count"] == 2 and [x["index"] for x in r["results"]] == [1], r
    got = b.recv_messages(10)["messages"]
    assert [m["message"] for m in got] == [value, value, value]


def test_send_batch_round_trip(kernel, op):
    r = spawn_echo(kernel, op, "echo-batch")
    items = [{"to": r["id"] if i % 2 else "echo-batch", "message": {"i": i}} for i in range(40)]
    items.insert(7, {"to_name": "nobody-batch", "message": {"i": -1}})
    reply = op.send_batch(items)
    assert reply["success"] is True, reply
    assert (reply["delivered_count"], reply["failed_count"]) == (40, 1), reply
    assert reply["results"][7] == {"error": "target agent not found: nobody-batch", "code": "not_found"}
    assert all(x == {"delivered_to": r["id"]} for i, x in enumerate(reply["results"]) if i != 7), reply
    # the agent receives them in the order of the batch, as from the operator
    me = op.hello()["agent_id"]
    got = []
    deadline = time.monotonic() + 30
    while len(got) < 40 and time.monotonic() < deadline:
        for m in op.recv_messages(50, timeout=2)["messages"]:
            assert m["message"]["from"] == me, m
            got.append(m["message"]["echo"]["i"])
    assert got == list(range(40))
    # a request of the wrong shape is refused as a whole
    with pytest.raises(InvalidRequestError):
        op.send_batch([], check=True)
    bad = op.send_batch([{"to_name": "echo-batch", "message": "never"}, {"to": -1}])
    assert bad["success"] is False and bad["code"] == "invalid_request", bad
    assert op.recv_messages(10, timeout=0.5)["count"] == 0


def test_blocking_recv_returns_when_a_message_arrives(kernel, op):
    me = op.hello()["agent_id"]
    sender = kernel.client()
    counter = count_frames(op)

    def later():
        time.sleep(0.5)
        sender.send_message({"late": True}, to=me)

    t = threading.Thread(target=later)
    start = time.monotonic()
    t.start()
    r = op.recv_messages(10, timeout=5)
    elapsed = time.monotonic() - start
    t.join()
    assert r["success"] is True and r["count"] == 1, r
    assert r["messages"][0]["message"] == {"late": True}
    assert 0.4 <= elapsed < 4.0, elapsed
    assert len(counter.frames) == 1, "a blocking recv is one request (no busy polling)"
    assert counter.frames[0].json() == {"max": 10, "wait": True, "timeout_ms": 5000}


def test_blocking_recv_times_out_without_polling(op):
    counter = count_frames(op)
    start = time.monotonic()
    r = op.recv_messages(10, timeout=1.0)
    elapsed = time.monotonic() - start
    assert r["success"] is True and r["count"] == 0 and r["messages"] == [], r
    assert elapsed >= 0.99, f"returned after {elapsed:.3f}s, before the 1 s timeout"
    assert elapsed < 3.0, elapsed
    assert len(counter.frames) == 1, [f.payload_str for f in counter.frames]
    # wait_message: same, returns None
    start = time.monotonic()
    assert op.wait_message(timeout=0.5) is None
    assert time.monotonic() - start >= 0.49
    assert len(counter.frames) == 2


def test_broadcast_and_register(kernel, op):
    spawn_echo(kernel, op, "b1")
    spawn_echo(kernel, op, "b2")
    reg = op.register_name("operator-desk")
    assert reg["success"] is True and reg["name"] == "operator-desk"
    r = op.broadcast({"hey": 1})
    assert r["success"] is True
    assert r["delivered_count"] >= 2, r
    froms = set()
    for _ in range(2):
        m = op.wait_message(15)
        assert m is not None
        assert m["message"]["echo"] == {"hey": 1}
        froms.add(m["from_name"])
    assert froms == {"b1", "b2"}


# ---------------------------------------------------------------- lifecycle


def test_list_agents(kernel, op):
    r = spawn_echo(kernel, op, "lister")
    agents = op.list_agents()
    assert isinstance(agents, list)
    entry = next(a for a in agents if a["id"] == r["id"])
    assert entry["name"] == "lister"
    assert entry["pid"] == r["pid"]
    assert entry["state"] in ("STARTING", "RUNNING")
    for field in ("running", "restarts", "uptime_ms", "restart_policy", "exit_code", "exit_signal", "exit_reason"):
        assert field in entry, (field, entry)
    assert entry["restart_policy"] == "never"


def test_kill_by_name_and_by_id(kernel, op):
    a = spawn_echo(kernel, op, "victim1")
    b = spawn_echo(kernel, op, "victim2")
    ask(kernel, op, "victim1", {"ping": 1})  # make sure it is up
    assert op.kill("victim1") is True
    assert op.last_reply["agent_id"] == a["id"]
    assert op.kill(agent_id=b["id"]) is True
    for agent in (a, b):
        entry = wait_state(op, agent["id"], (None, "STOPPED", "FAILED"))
        if entry is not None:
            assert entry["running"] is False
    # the pid is gone
    with pytest.raises(ProcessLookupError):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            os.kill(a["pid"], 0)
            time.sleep(0.05)
    # killing an unknown agent is not_found
    assert op.kill("nobody") is False
    assert op.last_reply["success"] is False and op.last_reply["code"] == "not_found"


def test_pause_and_resume(kernel, op):
    r = spawn_echo(kernel, op, "sleepy")
    ask(kernel, op, "sleepy", {"ping": 0})
    assert op.pause("sleepy") is True
    assert op.last_reply.get("paused") is True and op.last_reply["agent_id"] == r["id"]
    assert wait_state(op, r["id"], ("PAUSED",))["state"] == "PAUSED"
    op.send_message({"while": "paused"}, to_name="sleepy")
    assert op.wait_message(timeout=0.7) is None, "a paused agent answered"
    # resuming a paused agent twice: the second is invalid_state
    assert op.resume(agent_id=r["id"]) is True
    assert op.last_reply.get("resumed") is True
    m = op.wait_message(15)
    assert m is not None and m["message"]["echo"] == {"while": "paused"}
    assert op.resume("sleepy") is False
    assert op.last_reply["code"] == "invalid_state"
    # kill works on a paused agent
    assert op.pause(r["id"]) is True
    assert op.kill("sleepy") is True
    wait_state(op, r["id"], (None, "STOPPED", "FAILED"))


def test_events_spawned_and_exited(kernel, op):
    sub = op.subscribe(["AGENT_SPAWNED", "AGENT_EXITED"])
    assert sub["success"] is True
    r = spawn_echo(kernel, op, "evented")
    ev, _ = wait_event(op, lambda e: e["type"] == "AGENT_SPAWNED" and e["data"].get("agent_id") == r["id"])
    assert ev["data"]["name"] == "evented" and ev["data"]["pid"] == r["pid"]
    assert isinstance(ev["timestamp"], (int, float)) and ev["timestamp"] > 1_600_000_000_000  # Unix ms
    assert "source_agent_id" in ev
    # natural exit with status 3
    ask(kernel, op, "evented", {"cmd": "exit", "code": 3})
    ev, _ = wait_event(op, lambda e: e["type"] == "AGENT_EXITED" and e["data"].get("agent_id") == r["id"])
    assert ev["data"]["name"] == "evented"
    assert ev["data"]["exit_code"] == 3, ev
    # killed agent: AGENT_EXITED with killed_by
    k = spawn_echo(kernel, op, "evented2")
    ask(kernel, op, "evented2", {"ping": 1})
    assert op.kill("evented2") is True
    ev, _ = wait_event(op, lambda e: e["type"] == "AGENT_EXITED" and e["data"].get("agent_id") == k["id"])
    assert ev["data"].get("killed_by") == op.hello()["agent_id"], ev


def test_poll_events_blocks_and_times_out(op):
    op.subscribe("CUSTOM")
    counter = count_frames(op)
    start = time.monotonic()
    r = op.poll_events(timeout=0.8)
    elapsed = time.monotonic() - start
    assert r["success"] is True and r["count"] == 0 and r["events"] == [], r
    assert elapsed >= 0.79, elapsed
    assert len(counter.frames) == 1
    assert counter.frames[0].json() == {"max": 100, "wait": True, "timeout_ms": 800}


def test_emit_and_unsubscribe(kernel, op):
    other = kernel.client()
    assert other.subscribe(["my_event"])["success"] is True
    r = op.emit_event("my_event", {"k": "v"})
    assert r["success"] is True and r["event"] == "my_event", r
    assert r.get("delivered_to", 1) >= 1, r
    ev = other.wait_event(5)
    assert ev is not None, "emitted event not delivered"
    assert ev["data"].get("k") == "v", ev
    assert ev["type"] in ("CUSTOM", "my_event"), ev
    assert ev["data"].get("custom_type", "my_event") == "my_event", ev
    u = other.unsubscribe(all=True)
    assert u["success"] is True, u
    op.emit_event("my_event", {"k": 2})
    assert other.poll_events()["count"] == 0


# ---------------------------------------------------------------- state store


def test_store_fetch_delete_keys(kernel, op):
    assert op.store("cfg.a", {"x": [1, 2]})["success"] is True
    assert op.store("cfg.b", "two", scope="global")["key"] == "cfg.b"
    f = op.fetch("cfg.a")
    assert f["success"] is True and f["exists"] is True and f["value"] == {"x": [1, 2]}
    keys = op.list_keys("cfg.")
    assert keys["success"] is True and sorted(keys["keys"]) == ["cfg.a", "cfg.b"] and keys["count"] == 2
    assert "cfg.a" in op.list_keys()["keys"]
    d = op.delete_key("cfg.a")
    assert d["success"] is True and d["deleted"] is True
    assert op.fetch("cfg.a")["exists"] is False
    assert op.delete_key("cfg.a")["deleted"] is False
    missing = op.fetch("never")
    assert missing["success"] is True and missing["exists"] is False and missing["value"] is None


def test_store_ttl(op):
    assert op.store("short", 1, ttl=1)["success"] is True
    assert op.store("long", 2, ttl=60)["success"] is True
    assert op.fetch("short")["exists"] is True
    time.sleep(1.3)
    assert op.fetch("short")["exists"] is False
    assert "short" not in op.list_keys()["keys"]
    assert op.fetch("long")["value"] == 2


def test_store_scopes(kernel, op):
    # session scope: readable by all
    assert op.store("sess", "s", scope="session")["success"] is True
    f = op.fetch("sess", scope="session")
    assert f["exists"] is True and f["value"] == "s"
    # agent scope: private to the agent
    spawn_echo(kernel, op, "keeper")
    spawn_echo(kernel, op, "snoop")
    r = ask(kernel, op, "keeper", {"cmd": "store", "key": "secret", "value": 42, "scope": "agent"})["message"]["reply"]
    assert r["success"] is True, r
    mine = ask(kernel, op, "keeper", {"cmd": "fetch", "key": "secret"})["message"]["reply"]
    assert mine["exists"] is True and mine["value"] == 42 and mine.get("scope", "agent") == "agent", mine
    theirs = ask(kernel, op, "snoop", {"cmd": "fetch", "key": "secret"})["message"]["reply"]
    assert theirs["exists"] is False, theirs
    assert op.fetch("secret")["exists"] is False  # the operator has no agent scope of its own
    # global keys: writable by their owner and operators, not by other agents
    r = ask(kernel, op, "keeper", {"cmd": "store", "key": "owned", "value": 1})["message"]["reply"]
    assert r["success"] is True, r
    r = ask(kernel, op, "snoop", {"cmd": "store", "key": "owned", "value": 2})["message"]["reply"]
    assert r["success"] is False and r["code"] == "permission_denied", r
    r = ask(kernel, op, "snoop", {"cmd": "delete", "key": "owned"})["message"]["reply"]
    assert r["success"] is False and r["code"] == "permission_denied", r
    assert op.fetch("owned")["value"] == 1
    assert op.store("owned", 3)["success"] is True
    assert op.fetch("owned")["value"] == 3


def test_state_changed_event(op):
    op.subscribe(["STATE_CHANGED"])
    op.store("watched", 1)
    ev, _ = wait_event(op, lambda e: e["type"] == "STATE_CHANGED" and e["data"].get("key") == "watched")
    assert ev["data"].get("action") == "store", ev


# ---------------------------------------------------------------- permissions


def test_permissions(kernel, op):
    p = op.get_permissions()
    assert p["success"] is True and isinstance(p["permissions"], dict)
    assert p["permissions"].get("can_spawn") is True  # operators may do anything


# ---------------------------------------------------------------- errors


def test_error_mapping_default_returns_dicts(kernel, op):
    r = op.send_message({"x": 1}, to_name="nobody-here")
    assert r["success"] is False and r["code"] == "not_found" and r["error"], r
    spawn_echo(kernel, op, "taken")
    r = op.register_name("taken")
    assert r["success"] is False and r["code"] == "name_taken", r
    r = op.async_poll()
    assert r["success"] is False and r["code"] == "not_supported", r


def test_error_mapping_strict(kernel):
    c = kernel.client(strict=True)
    with pytest.raises(NotFoundError) as ei:
        c.send_message({"x": 1}, to_name="nobody-here")
    assert ei.value.code == "not_found" and ei.value.reply["success"] is False
    with pytest.raises(NotSupportedError):
        c.call_json(SyscallOp.ASYNC_POLL, {}, check=True)
    with pytest.raises(InvalidRequestError):
        c.call_json(SyscallOp.SEND, {"to": "not-an-id", "message": {}})
    spawn_echo(kernel, c, "busy")
    with pytest.raises(InvalidStateError):
        c.resume("busy")
    with pytest.raises(NameTakenError):
        c.register_name("busy")
    with pytest.raises(KernelError):
        c.kill("nobody")
    # check=False turns strict off for one call
    assert c.fetch("nothing", check=False)["exists"] is False
    assert c.send_message({}, to_name="nobody-here", check=False)["code"] == "not_found"


def test_check_true_on_a_lenient_client(op):
    with pytest.raises(NotFoundError):
        op.send_message({"x": 1}, to_name="nobody-here", check=True)


def test_unknown_opcode_and_bad_json(op):
    f = op.call(0x13, b"{}")
    assert f.opcode == 0x13
    r = f.json()
    assert r["success"] is False and r["code"] == "unknown_opcode", r
    with pytest.raises(UnknownOpcodeError):
        op.call_json(0x13, {}, check=True)
    r = op.call(SyscallOp.SEND, b"this is not json").json()
    assert r["success"] is False and r["code"] == "invalid_request", r
    assert op.echo("still open") == "still open"  # the connection stays open


def test_bad_magic_closes_the_connection(op):
    op._connect()
    op._sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
    reply = op.recv()
    assert reply.opcode == 0 and reply.json()["code"] == "bad_frame", reply
    with pytest.raises(ConnectionClosedError):
        op.recv()


def test_agent_cannot_raise_its_own_rights(kernel, op):
    r = spawn_echo(kernel, op, "climber", permissions="standard")
    perms = ask(kernel, op, "climber", {"cmd": "getperms"})["message"]["reply"]
    assert perms["success"] is True and perms["permissions"].get("can_spawn") is False, perms
    up = ask(kernel, op, "climber", {"cmd": "setperms", "level": "unrestricted"})["message"]["reply"]
    assert up["success"] is False and up["code"] == "permission_denied", up
    up = ask(kernel, op, "climber", {"cmd": "setperms", "level": "unrestricted", "agent_id": r["id"]})["message"]["reply"]
    assert up["success"] is False and up["code"] == "permission_denied", up
    # the operator may
    s = op.set_permissions(level="unrestricted", agent_id=r["id"])
    assert s["success"] is True, s
    perms = ask(kernel, op, "climber", {"cmd": "getperms"})["message"]["reply"]
    assert perms["permissions"].get("can_spawn") is True, perms


def test_oversized_frame_closes_the_connection(op):
    import struct

    op._connect()
    op._sock.sendall(struct.pack("<IIBQ", 0x41474E54, 0, 0x20, 1024 * 1024 + 1))
    reply = op.recv()
    assert reply.opcode == 0x20, reply
    assert reply.json()["success"] is False and reply.json()["code"] == "bad_frame", reply
    with pytest.raises(ConnectionClosedError):
        op.recv()


def test_mailbox_full(kernel, op):
    r = spawn_echo(kernel, op, "stuffed")
    ask(kernel, op, "stuffed", {"ping": 1})
    assert op.pause("stuffed") is True  # nobody drains the mailbox
    # the agent's RECV that was already waiting in the kernel takes the first message; the mailbox
    # then holds --mailbox-size (default 1024) more
    accepted, full = 0, None
    for i in range(1100):
        full = op.send_message(i, to=r["id"])
        if not full["success"]:
            break
        accepted += 1
    assert full["success"] is False and full["code"] == "mailbox_full", full
    assert accepted in (1024, 1025), accepted
    with pytest.raises(MailboxFullError):
        op.send_message("again", to=r["id"], check=True)
    b = op.broadcast("hi")
    assert b["success"] is True and b["failed_count"] >= 1, b


def test_restart_on_failure_keeps_id_and_mailbox(kernel, op):
    op.subscribe(["AGENT_RESTARTING", "AGENT_EXITED"])
    r = spawn_echo(kernel, op, "phoenix", restart_policy="on-failure", backoff_initial_ms=50, min_uptime_ms=100)
    assert r["restart_policy"] == "on-failure"
    ask(kernel, op, "phoenix", {"cmd": "exit", "code": 7})
    ev, _ = wait_event(op, lambda e: e["type"] == "AGENT_RESTARTING" and e["data"].get("agent_id") == r["id"])
    assert ev["data"].get("exit_code") == 7, ev
    # same id after the restart; messages sent meanwhile are delivered
    back = ask(kernel, op, r["id"], {"after": "restart"})
    assert back["from"] == r["id"] and back["message"]["echo"] == {"after": "restart"}
    info = ask(kernel, op, "phoenix", {"cmd": "info"})["message"]
    assert info["hello"]["agent_id"] == r["id"] and info["pid"] != r["pid"]
    entry = agent_entry(op, r["id"])
    assert entry is not None and entry["restarts"] >= 1, entry
    # a clean exit is not restarted under on-failure
    ask(kernel, op, "phoenix", {"cmd": "exit", "code": 0})
    ev, _ = wait_event(op, lambda e: e["type"] == "AGENT_EXITED" and e["data"].get("agent_id") == r["id"] and e["data"].get("exit_code") == 0)
    wait_state(op, r["id"], (None, "STOPPED"))


def test_watchdog_restarts_a_silent_agent(kernel, op):
    op.subscribe(["AGENT_RESTARTING"])
    r = spawn_echo(kernel, op, "quiet", restart_policy="always", watchdog_ms=800, backoff_initial_ms=50)
    ask(kernel, op, "quiet", {"cmd": "heartbeat"})
    # the agent now sleeps without a syscall (time parked in a blocking RECV would not be silence)
    ask(kernel, op, "quiet", {"cmd": "hang", "seconds": 30})
    ev, _ = wait_event(op, lambda e: e["type"] == "AGENT_RESTARTING" and e["data"].get("agent_id") == r["id"], timeout=10)
    assert ev["data"]["agent_id"] == r["id"]


def test_agent_socket_refuses_non_agents(kernel, op):
    h = op.hello()
    agent_sock = h.get("agent_socket") or os.path.join(kernel.data_dir, "run", "agent.sock")
    assert os.path.exists(agent_sock), h
    outsider = CloveClient(agent_sock, timeout=5)
    try:
        with pytest.raises(ConnectionClosedError):
            outsider.connect()
            outsider.hello()
    finally:
        outsider.close()


def test_kernel_sigterm_stops_agents(kernel, op):
    r = spawn_echo(kernel, op, "orphan-check")
    ask(kernel, op, "orphan-check", {"ping": 1})
    op.close()
    kernel.proc.send_signal(signal.SIGTERM)
    kernel.proc.wait(timeout=15)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(r["pid"], 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"agent pid {r['pid']} survived the kernel's SIGTERM")
