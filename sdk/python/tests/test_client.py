"""Client behaviour against a scripted fake kernel (no node needed): request shapes, return shapes,
strict mode, timeouts, closed connections, thread safety."""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import tempfile
import threading
import time

import pytest

import clove_sdk
from clove_sdk import (
    BadPushError,
    CloveClient,
    ConnectionClosedError,
    KernelError,
    MailboxFullError,
    NotFoundError,
    PermissionDeniedError,
    SyscallOp,
    TimeoutError,
    UnexpectedReplyError,
)
from clove_sdk.errors import KERNEL_ERRORS, CloveError
from clove_sdk.protocol import FrameDecoder, encode_frame

from conftest import count_frames, encode_push_binary


class FakeKernel:
    """Answers each request with handler(opcode, payload_bytes) -> reply (dict/list/bytes/str), None to
    stay silent, "CLOSE" to hang up, or ("RAW", bytes) to write those bytes (frames, e.g. pushes and a reply). Records every request as (opcode, parsed payload)."""

    def __init__(self, handler=None):
        self.dir = tempfile.mkdtemp(prefix="clv", dir="/tmp")
        self.path = os.path.join(self.dir, "k.sock")
        self.handler = handler or self.default
        self.requests: list[tuple[int, object]] = []
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(self.path)
        self.srv.listen(16)
        self.next_id = 1
        self.conns: list[socket.socket] = []
        self.clients: list[CloveClient] = []
        threading.Thread(target=self.accept, daemon=True).start()

    @staticmethod
    def default(op, payload):
        if op == 0:
            return payload
        return {"success": True}

    def accept(self):
        while True:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                return
            cid, self.next_id = self.next_id, self.next_id + 1
            self.conns.append(conn)
            threading.Thread(target=self.serve, args=(conn, cid), daemon=True).start()

    def serve(self, conn, cid):
        dec = FrameDecoder()
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            for f in dec.feed(data):
                try:
                    parsed = json.loads(f.payload) if f.payload else None
                except ValueError:
                    parsed = f.payload
                self.requests.append((f.opcode, parsed))
                reply = self.handler(f.opcode, f.payload)
                if reply is None:
                    continue
                if reply == "CLOSE":
                    conn.close()
                    return
                if isinstance(reply, tuple) and reply[0] == "RAW":  # ("RAW", bytes): frames made by the test
                    conn.sendall(reply[1])
                    continue
                if isinstance(reply, tuple):  # (opcode, body)
                    op, reply = reply
                else:
                    op = f.opcode
                if isinstance(reply, (dict, list)):
                    reply = json.dumps(reply)
                conn.sendall(encode_frame(op, reply, agent_id=cid))

    def client(self, *args, **kw):
        c = CloveClient(self.path, *args, **kw)
        self.clients.append(c)
        return c

    def close(self):
        for c in self.clients:
            c.close()
        self.srv.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def fake():
    k = FakeKernel()
    yield k
    k.close()


def last(fake):
    # the fake records requests from its own thread; the reply was sent after recording
    return fake.requests[-1]


def test_default_socket_path(monkeypatch):
    monkeypatch.delenv("CLOVE_SOCKET", raising=False)
    assert CloveClient().socket_path == "/tmp/clove.sock"
    monkeypatch.setenv("CLOVE_SOCKET", "/tmp/x/agent.sock")
    assert CloveClient().socket_path == "/tmp/x/agent.sock"
    assert CloveClient("/elsewhere.sock").socket_path == "/elsewhere.sock"


def test_connect_failure(tmp_path):
    c = CloveClient(str(tmp_path / "none.sock"))
    assert c.connect() is False
    with pytest.raises(ConnectionClosedError):
        CloveClient(str(tmp_path / "none.sock"), strict=True).connect()
    with pytest.raises(ConnectionError):  # a builtin ConnectionError too
        clove_sdk.connect(str(tmp_path / "none.sock"))


def test_hello_stores_identity(fake):
    fake.handler = lambda op, p: {"success": True, "protocol_version": 1, "agent_id": 7, "role": "operator"}
    with fake.client() as c:
        r = c.hello()
        assert r["role"] == "operator"
        assert c.agent_id == 7 and c.role == "operator"
        assert last(fake) == (0xFE, {})


def test_request_shapes(fake):
    c = fake.client()
    c.spawn("w", "/a/w.py", args=["x"], env={"A": "1"}, cwd="/tmp", restart_policy="on-failure",
            backoff_initial_ms=50, backoff_multiplier=1.5, backoff_max_ms=900, min_uptime_ms=10,
            watchdog_ms=2000, permissions="standard", limits={"memory": 1}, budgets={"mailbox_messages": 2})
    op, p = last(fake)
    assert op == 0x10
    assert p == {"name": "w", "script": "/a/w.py", "sandboxed": True, "network": False,
                 "restart_policy": "on-failure", "max_restarts": 5, "restart_window": 300, "limits": {"memory": 1},
                 "args": ["x"], "env": {"A": "1"}, "cwd": "/tmp", "backoff_initial_ms": 50,
                 "backoff_multiplier": 1.5, "backoff_max_ms": 900, "min_uptime_ms": 10, "watchdog_ms": 2000,
                 "permissions": "standard", "budgets": {"mailbox_messages": 2}}
    c.kill(agent_id=0)
    assert last(fake) == (0x11, {"id": 0})  # id 0 is sent (the public SDK dropped it)
    c.kill(5)
    assert last(fake) == (0x11, {"id": 5})
    c.pause("w")
    assert last(fake) == (0x14, {"name": "w"})
    c.resume(agent_id=3)
    assert last(fake) == (0x15, {"id": 3})
    c.emit_event("deploy", {"v": 1})
    assert last(fake) == (0x63, {"event": "deploy", "data": {"v": 1}})
    c.unsubscribe(all=True)
    assert last(fake) == (0x61, {"all": True})
    c.unsubscribe(["A"])
    assert last(fake) == (0x61, {"event_types": ["A"]})
    c.subscribe("AGENT_EXITED")
    assert last(fake) == (0x60, {"event_types": ["AGENT_EXITED"]})
    c.recv_messages()
    assert last(fake) == (0x21, {"max": 10})
    c.recv_messages(3, timeout=2.5)
    assert last(fake) == (0x21, {"max": 3, "wait": True, "timeout_ms": 2500})
    c.poll_events()
    assert last(fake) == (0x62, {"max": 100})
    c.poll_events(5, timeout=0.25)
    assert last(fake) == (0x62, {"max": 5, "wait": True, "timeout_ms": 250})
    c.send_message({"a": 1}, to="bob")
    assert last(fake) == (0x20, {"message": {"a": 1}, "to_name": "bob"})
    c.send_message("x", to=4)
    assert last(fake) == (0x20, {"message": "x", "to": 4})
    c.send_batch([{"to": "bob", "message": {"a": 1}}, {"to": 4, "to_name": "x", "message": "x"}, {"to_name": "c"}])
    assert last(fake) == (
        0x25,
        {"messages": [{"to_name": "bob", "message": {"a": 1}}, {"to": 4, "to_name": "x", "message": "x"}, {"to_name": "c"}]},
    )
    c.send_batch(m for m in [{"to": 0, "message": None}])  # any iterable; id 0 and a null message are sent
    assert last(fake) == (0x25, {"messages": [{"to": 0, "message": None}]})
    with pytest.raises(TypeError):
        c.send_batch(["bob"])
    c.store("k", [1], scope="agent", ttl=3)
    assert last(fake) == (0x30, {"key": "k", "value": [1], "scope": "agent", "ttl": 3})
    c.fetch("k", scope="session")
    assert last(fake) == (0x31, {"key": "k", "scope": "session"})
    c.delete_key("k")
    assert last(fake) == (0x32, {"key": "k"})
    c.list_keys()
    assert last(fake) == (0x33, {})
    c.heartbeat()
    assert last(fake) == (0xD0, {})
    c.set_permissions(level="readonly", agent_id=0)
    assert last(fake) == (0x41, {"level": "readonly", "agent_id": 0})
    c.start_replay("[]")
    assert last(fake) == (0x73, {"recording_data": "[]"})
    with pytest.raises(ValueError):
        c.kill()
    with pytest.raises(ValueError):
        c.unsubscribe()
    c.close()


def test_return_shapes(fake):
    replies = {
        0x12: [{"id": 1, "name": "a"}],
        0x11: {"success": True, "killed": True, "agent_id": 1},
        0x14: {"success": True, "paused": True, "agent_id": 1},
        0x15: {"success": False, "error": "not paused", "code": "invalid_state"},
        0xFF: b"goodbye",
    }
    fake.handler = lambda op, p: replies.get(op, p if op == 0 else {"success": True})
    c = fake.client()
    assert c.list_agents() == [{"id": 1, "name": "a"}]
    assert c.kill("a") is True and c.last_reply["agent_id"] == 1
    assert c.pause("a") is True
    assert c.resume("a") is False and c.last_reply["code"] == "invalid_state"
    assert c.echo("hi") == "hi" and c.echo(b"\x00\xff") == b"\x00\xff"
    assert c.exit() is True and not c.connected


def test_kernel_errors_default_vs_strict(fake):
    fake.handler = lambda op, p: {"success": False, "error": "no such agent: bob", "code": "not_found"}
    lenient = fake.client()
    r = lenient.send_message({}, to_name="bob")
    assert r == {"success": False, "error": "no such agent: bob", "code": "not_found"}
    with pytest.raises(NotFoundError) as ei:
        lenient.send_message({}, to_name="bob", check=True)
    assert ei.value.code == "not_found" and ei.value.message == "no such agent: bob"
    strict = fake.client(strict=True)
    with pytest.raises(NotFoundError):
        strict.fetch("x")
    with pytest.raises(NotFoundError):
        strict.kill("bob")
    assert strict.fetch("x", check=False)["code"] == "not_found"
    # public-kernel style error without `success`
    fake.handler = lambda op, p: {"error": "failed to spawn agent"}
    with pytest.raises(KernelError) as ei:
        strict.spawn("a", "b.py")
    assert type(ei.value) is KernelError and ei.value.code is None


@pytest.mark.parametrize("code,cls", sorted(KERNEL_ERRORS.items()))
def test_every_kernel_code_has_its_class(fake, code, cls):
    fake.handler = lambda op, p: {"success": False, "error": "e", "code": code}
    with pytest.raises(cls) as ei:
        fake.client(strict=True).hello()
    assert isinstance(ei.value, KernelError) and isinstance(ei.value, CloveError)
    assert ei.value.code == code


def test_error_classes():
    assert KERNEL_ERRORS["permission_denied"] is PermissionDeniedError
    assert KERNEL_ERRORS["mailbox_full"] is MailboxFullError
    assert issubclass(TimeoutError, __builtins__["TimeoutError"] if isinstance(__builtins__, dict) else __builtins__.TimeoutError)
    assert issubclass(ConnectionClosedError, ConnectionError)


def test_timeout_closes_the_connection(fake):
    fake.handler = lambda op, p: None  # never answers
    c = fake.client(timeout=0.3)
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        c.hello()
    assert 0.25 <= time.monotonic() - start < 2
    assert not c.connected


def test_kernel_wait_extends_the_client_timeout(fake):
    def slow(op, p):
        time.sleep(0.6)
        return {"success": True, "messages": [], "count": 0}

    fake.handler = slow
    c = fake.client(timeout=0.3)
    counter = count_frames(c)
    assert c.recv_messages(timeout=0.5)["count"] == 0  # 0.6 s < 0.3 + 0.5
    assert c.wait_message(timeout=0.5) is None
    assert len(counter.frames) == 2


def test_closed_by_kernel(fake):
    fake.handler = lambda op, p: "CLOSE"
    c = fake.client()
    with pytest.raises(ConnectionClosedError):
        c.hello()
    assert not c.connected


def test_wrong_reply_opcode_is_a_protocol_error(fake):
    fake.handler = lambda op, p: (0x00, {"success": True})
    c = fake.client()
    with pytest.raises(UnexpectedReplyError):
        c.hello()
    assert not c.connected


def test_non_json_reply(fake):
    fake.handler = lambda op, p: b"oops"
    assert fake.client().fetch("k") == {"success": False, "error": "oops", "code": "invalid_reply"}


def test_oversized_request_is_refused_locally(fake):
    c = fake.client()
    with pytest.raises(clove_sdk.PayloadTooLargeError):
        c.echo("x" * (1024 * 1024 + 1))
    assert c.echo("x" * (1024 * 1024)) == "x" * (1024 * 1024)


def test_thread_safety(fake):
    c = fake.client()
    errors = []

    def worker(n):
        try:
            for i in range(100):
                s = f"t{n}-{i}"
                assert c.echo(s) == s
        except Exception as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(fake.requests) == 800


def test_context_manager(fake):
    with fake.client() as c:
        sock = c._sock
        assert c.echo("a") == "a"
    assert c._sock is None and sock.fileno() == -1


def test_syscallop_names():
    assert SyscallOp.SYS_SEND is SyscallOp.SEND and SyscallOp.SEND == 0x20
    assert SyscallOp.SYS_HEARTBEAT == SyscallOp.HEARTBEAT == 0xD0
    assert SyscallOp.HELLO.log_name == "HELLO"
    assert clove_sdk.op_name(0x13) == "UNKNOWN"


def test_import_is_light_and_the_opcode_enum_is_made_on_first_use():
    """`import clove_sdk` is paid at every agent (re)start: it builds no enum and loads no socket.py (the
    client sends plain ints on the C socket type); SyscallOp / Op appear, complete, on first access."""
    import subprocess
    import sys

    code = (
        "import sys, clove_sdk, clove_sdk.protocol as p\n"
        "assert 'SyscallOp' not in vars(p) and 'socket' not in sys.modules, sorted(sys.modules)\n"
        "from clove_sdk import SyscallOp, Op\n"
        "assert Op is SyscallOp is p.SyscallOp and SyscallOp.SEND is SyscallOp.SYS_SEND == 0x20\n"
        "assert SyscallOp(0x25).log_name == 'SEND_BATCH' and p.op_name(0x25) == 'SEND_BATCH'\n"
        "assert p.op_name(0xEE) == 'UNKNOWN'\n"
    )
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    # -S: no site-packages hooks that would import socket.py on their own.
    r = subprocess.run([sys.executable, "-S", "-c", f"import sys; sys.path.insert(0, {here!r})\n" + code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_encoded_message_goes_on_the_wire_as_its_value_would():
    raw: list[bytes] = []

    def record(op, payload):
        raw.append(bytes(payload))
        return {"success": True}

    k = FakeKernel(record)
    try:
        c = k.client()
        values = [{"a": [1, "é\u2028\""], "b": None}, "x" * 300, 0, [True], "\U0001F600"]

        def sent(enc: bool) -> list[bytes]:
            raw.clear()
            m = clove_sdk.EncodedMessage if enc else (lambda v: v)
            c.send_message(m(values[0]), to=7)
            c.send_message(m(values[1]), to="peer")
            c.send_message(m(values[2]), to=4, to_name="both")
            c.send_batch(
                [
                    {"to": 3, "message": m(values[0])},
                    {"to": 3, "message": values[2]},  # a plain one among them
                    {"to": "peer", "message": m(values[3])},
                    {"to_name": "peer", "message": m(values[4])},
                    {"to_name": "peer"},
                    {"to": 4, "to_name": "both", "message": m(values[1])},
                ],
                results="refused",
            )
            c.send_batch([{"to": 5, "message": m(values[2])}])
            return list(raw)

        assert sent(True) == sent(False)
        assert clove_sdk.EncodedMessage("abc").byte_length == 5
        assert "EncodedMessage(" in repr(clove_sdk.EncodedMessage({"k": 1}))
    finally:
        k.close()



HELLO_BINARY = {"messages": True, "events": False, "batch": True, "format": "binary"}


def pushed(texts, first_seq=1):
    """Pushed messages of ``texts`` (JSON texts) from peer 9, as encode_push_binary takes them."""
    return [
        {"from": 9, "from_name": "peer", "age_ms": 2, "seq": first_seq + i, "message": t} for i, t in enumerate(texts)
    ]


def push_binary_frame(messages, agent_id=1):
    return encode_frame(SyscallOp.SYS_PUSH_BINARY, encode_push_binary(messages), agent_id=agent_id)


def reply_frame(op, body, agent_id=1):
    return encode_frame(op, json.dumps(body), agent_id=agent_id)


def test_messages_pushed_in_the_binary_envelope_come_with_their_bytes(fake):
    texts = ['{ "a" : [1, 2],"é":"\\u20ac" }', '"\u00e9"', "null"]

    def handler(op, p):
        if op == SyscallOp.SYS_HELLO:
            return {"success": True, "agent_id": 1, "push": HELLO_BINARY}
        if op == SyscallOp.SYS_NOOP:  # two pushes between the requests and the reply, one of two messages
            frames = push_binary_frame(pushed(texts[:2])) + push_binary_frame(pushed(texts[2:], 3))
            return ("RAW", frames + encode_frame(op, p, agent_id=1))
        return {"success": True}

    fake.handler = handler
    c = fake.client(strict=True)
    assert c.set_push(messages=True)["push"]["format"] == "binary"
    assert last(fake) == (SyscallOp.SYS_HELLO, {"push": HELLO_BINARY})
    assert c.echo("x") == "x"
    got = list(c.messages(timeout=0.2))
    assert [m["bytes"] for m in got] == [t.encode() for t in texts]
    assert [m["message"] for m in got] == [json.loads(t) for t in texts]
    assert [(m["from"], m["from_name"], m["seq"], m["age_ms"]) for m in got] == [(9, "peer", i, 2) for i in (1, 2, 3)]
    # events alone: no batch, no format
    c.set_push(events=True)
    assert last(fake) == (SyscallOp.SYS_HELLO, {"push": {"messages": False, "events": True, "batch": False}})


def test_a_kernel_without_the_binary_envelope_pushes_json(fake):
    def handler(op, p):
        if op != SyscallOp.SYS_HELLO:
            return {"success": True}
        push = json.loads(p)["push"]
        if "format" in push:
            return {"success": False, "error": "push: unknown field format", "code": "invalid_request"}
        batch = {"kind": "messages", "messages": [{"from": 9, "from_name": "peer", "message": {"n": 1}, "age_ms": 0, "seq": 1}]}
        return ("RAW", reply_frame(op, {"success": True, "push": push}) + encode_frame(SyscallOp.SYS_PUSH, json.dumps(batch)))

    fake.handler = handler
    c = fake.client(strict=True)
    c.connect()
    assert c.set_push(messages=True)["push"] == {"messages": True, "events": False, "batch": True}
    assert [r for r in fake.requests if r[0] == SyscallOp.SYS_HELLO] == [
        (SyscallOp.SYS_HELLO, {"push": HELLO_BINARY}),
        (SyscallOp.SYS_HELLO, {"push": {"messages": True, "events": False, "batch": True}}),
    ]
    (m,) = list(c.messages(timeout=0.2))
    assert m == {"from": 9, "from_name": "peer", "message": {"n": 1}, "age_ms": 0, "seq": 1}  # no "bytes"


def test_a_new_connection_asks_for_the_binary_envelope_again(fake):
    noops = []

    def handler(op, p):
        if op == SyscallOp.SYS_NOOP:
            noops.append(p)
            if len(noops) == 1:
                return "CLOSE"  # a kernel restart, as the client sees it
        return FakeKernel.default(op, p)

    fake.handler = handler
    c = fake.client(reconnect_window=5)
    c.set_push(messages=True)
    hellos = len(fake.requests)
    assert c.echo("x") == "x"  # sent again on a new connection, after the HELLO that asks for the pushes
    assert fake.requests[hellos:] == [(0, b"x"), (SyscallOp.SYS_HELLO, {"push": HELLO_BINARY}), (0, b"x")]


def test_a_bad_binary_push_drops_the_connection(fake):
    bad = encode_push_binary(pushed(['{"n":1}'])) + b"\0"  # a byte after its last message
    noops = []

    def handler(op, p):
        if op == SyscallOp.SYS_NOOP:
            noops.append(p)
            if len(noops) == 1:
                return ("RAW", encode_frame(SyscallOp.SYS_PUSH_BINARY, bad) + encode_frame(op, p))
        return FakeKernel.default(op, p)

    fake.handler = handler
    c = fake.client()
    c.set_push(messages=True)
    with pytest.raises(BadPushError) as ei:
        c.echo("x")
    assert ei.value.kind == "trailing_bytes" and ei.value.code == "bad_push"
    assert not c.connected
    assert c.echo("y") == "y"  # the next call opens a new connection


def test_a_bad_binary_push_on_the_reader_thread_drops_the_connection(fake):
    bad = struct.pack("<I", 1) + encode_push_binary(pushed(['{"n":1}']))[4:-1]  # the message cut short
    noops = []

    def handler(op, p):
        if op == SyscallOp.SYS_NOOP:
            noops.append(p)
            if len(noops) == 1:
                return ("RAW", encode_frame(SyscallOp.SYS_PUSH_BINARY, bad))  # and no reply
        return FakeKernel.default(op, p)

    fake.handler = handler
    c = fake.client(timeout=5, reconnect_window=5)
    c.on_message(lambda m: None)
    assert c.echo("x") == "x"  # its connection dropped: sent again on a new one
    assert len(fake.conns) == 2
