"""Push delivery (HELLO push, PUSH 0x24, PUSH_BINARY 0x26) through the Python SDK against a real kernel: the
blocking iterators, the callback on a reader thread, a client that did not opt in, a client that stops
reading, and the binary envelope on both of the kernel's paths."""

from __future__ import annotations

import json
import socket
import threading

from clove_sdk.protocol import FrameDecoder, SyscallOp, decode_push_binary, encode_frame


def test_messages_iterator_gets_pushes_in_order_exactly_once(kernel):
    a, b = kernel.client(), kernel.client(strict=True)
    b_id = b.hello()["agent_id"]
    assert b.set_push(messages=True)["push"] == {"messages": True, "events": False, "batch": True, "format": "binary"}
    for i in range(100):
        assert a.send_message({"i": i}, to=b_id)["success"]
    got = []
    for m in b.messages(timeout=10):
        got.append(m)
        if len(got) == 100:
            break
    assert [m["message"]["i"] for m in got] == list(range(100))
    assert all("kind" not in m and m["from"] == a.hello()["agent_id"] for m in got)
    assert [m["seq"] for m in got] == sorted(m["seq"] for m in got)
    # taken, not copied: RECV finds nothing
    assert b.recv_messages(10)["count"] == 0


def test_a_client_that_did_not_opt_in_never_sees_a_push(kernel):
    a = kernel.client()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(kernel.socket)
    s.settimeout(10)
    dec = FrameDecoder()
    frames = []

    def call(op, payload):
        s.sendall(encode_frame(op, payload))
        want = len(frames) + 1
        while len(frames) < want:
            frames.extend(dec.feed(s.recv(65536)))
        return frames[-1].json()

    me = call(SyscallOp.SYS_HELLO, "{}")
    assert me["push"] == {"messages": False, "events": False}
    call(SyscallOp.SYS_SUBSCRIBE, '{"event_types": ["CUSTOM"]}')
    for i in range(10):
        a.send_message(i, to=me["agent_id"])
    a.emit_event("CUSTOM", {"x": 1})
    assert call(SyscallOp.SYS_RECV, '{"max": 100}')["count"] == 10
    assert call(SyscallOp.SYS_POLL_EVENTS, '{"max": 10}')["count"] == 1
    assert [f.opcode for f in frames] == [
        SyscallOp.SYS_HELLO,
        SyscallOp.SYS_SUBSCRIBE,
        SyscallOp.SYS_RECV,
        SyscallOp.SYS_POLL_EVENTS,
    ]
    s.close()


def test_on_message_callback_runs_on_a_reader_thread_and_calls_keep_working(kernel):
    a, b = kernel.client(), kernel.client(strict=True)
    b_id = b.hello()["agent_id"]
    got, done = [], threading.Event()

    def on_message(m):
        got.append(m["message"])
        if len(got) == 50:
            done.set()

    b.on_message(on_message)
    for i in range(50):
        a.send_message(i, to=b_id)
    assert done.wait(30), f"only {len(got)} messages pushed"
    assert got == list(range(50))
    # replies come through the reader thread, pushes keep their own opcode
    assert b.hello()["push"]["messages"] is True
    assert b.recv_messages(5)["count"] == 0
    b.close()


def test_events_iterator(kernel):
    a, b = kernel.client(), kernel.client(strict=True)
    b.subscribe(["CUSTOM"])
    b.set_push(events=True)
    for i in range(3):
        a.emit_event("CUSTOM", {"i": i})
    got = []
    for e in b.events(timeout=10):
        got.append(e)
        if len(got) == 3:
            break
    assert [e["data"]["i"] for e in got] == [0, 1, 2]
    assert got[0]["type"] == "CUSTOM"


def test_a_client_that_does_not_read_leaves_the_rest_in_its_mailbox(kernel):
    a, b = kernel.client(), kernel.client(strict=True)
    b_id = b.hello()["agent_id"]
    b.set_push(messages=True)
    n, body = 1000, "x" * 4096  # 4 MiB: more than the kernel pushes to a client that does not read
    for i in range(n):
        assert a.send_message({"i": i, "body": body}, to=b_id)["success"]
    # push off (its reply comes after what was already pushed), then RECV what stayed in the mailbox
    b.set_push()
    pushed = list(b._pushed["message"])
    b._pushed["message"].clear()
    rest = []
    while True:
        r = b.recv_messages(200)
        if not r["count"]:
            break
        rest += r["messages"]
    assert len(rest) > n // 2, f"{len(pushed)} pushed to a client that did not read"
    assert [m["message"]["i"] for m in pushed + rest] == list(range(n))


class RawConnection:
    """A connection without the SDK, to see the frames the kernel pushes as they are."""

    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(path)
        self.s.settimeout(10)
        self.dec = FrameDecoder()
        self.pushes = []  # PUSH and PUSH_BINARY frames, in order
        self.replies = []

    def _read(self):
        """Reads one chunk; returns the first reply it completed, if any (the rest wait in ``replies``)."""
        for f in self.dec.feed(self.s.recv(65536)):
            if f.opcode in (SyscallOp.SYS_PUSH, SyscallOp.SYS_PUSH_BINARY):
                self.pushes.append(f)
            else:
                self.replies.append(f)
        return self.replies.pop(0) if self.replies else None

    def call(self, op, body):
        self.s.sendall(encode_frame(op, json.dumps(body)))
        while (f := self._read()) is None:
            pass
        assert f.opcode == op
        return f.json()

    def read_pushes(self, messages, events=0):
        """Reads until ``messages`` pushed messages and ``events`` events have come; returns both lists."""
        while True:
            got_m, got_e = [], []
            for f in self.pushes:
                if f.opcode == SyscallOp.SYS_PUSH_BINARY:
                    got_m += decode_push_binary(f.payload)
                else:
                    item = f.json()
                    (got_e if item["kind"] == "event" else got_m).append(item)
            if len(got_m) >= messages and len(got_e) >= events:
                return got_m, got_e
            assert self._read() is None, "a reply nobody asked for"

    def close(self):
        self.s.close()


def test_binary_push_one_message_to_a_frame_without_batch_and_events_stay_json(any_path_kernel):
    a = any_path_kernel.client(strict=True)
    a.register_name("alice")
    r = RawConnection(any_path_kernel.socket)
    me = r.call(SyscallOp.SYS_HELLO, {"push": {"messages": True, "events": True, "format": "binary"}})
    assert me["push"]["format"] == "binary" and me["push"]["events"] and not me["push"].get("batch")
    r.call(SyscallOp.SYS_SUBSCRIBE, {"event_types": ["CUSTOM"]})
    for i in range(20):
        a.send_message({"i": i}, to=me["agent_id"])
    a.emit_event("CUSTOM", {"x": 1})
    msgs, events = r.read_pushes(20, 1)
    binary = [f for f in r.pushes if f.opcode == SyscallOp.SYS_PUSH_BINARY]
    assert len(binary) == 20 and all(len(decode_push_binary(f.payload)) == 1 for f in binary)
    assert [m["message"] for m in msgs] == [{"i": i} for i in range(20)]
    assert [m["bytes"] for m in msgs] == [b'{"i":%d}' % i for i in range(20)]
    assert {(m["from"], m["from_name"]) for m in msgs} == {(a.hello()["agent_id"], "alice")}
    assert [e["type"] for e in events] == ["CUSTOM"] and events[0]["data"] == {"x": 1}
    # taken, not copied
    assert r.call(SyscallOp.SYS_RECV, {"max": 100})["count"] == 0
    r.close()


def test_binary_push_with_batch_carries_several_messages_to_a_frame(any_path_kernel):
    a = any_path_kernel.client(strict=True)
    r = RawConnection(any_path_kernel.socket)
    me = r.call(SyscallOp.SYS_HELLO, {})
    for i in range(50):
        a.send_message(i, to=me["agent_id"])
    # what the mailbox already holds is pushed at once, several to a frame
    reply = r.call(SyscallOp.SYS_HELLO, {"push": {"messages": True, "batch": True, "format": "binary"}})
    assert reply["push"] == {"messages": True, "events": False, "batch": True, "format": "binary"}
    msgs, _ = r.read_pushes(50)
    assert [m["message"] for m in msgs] == list(range(50))
    assert [m["seq"] for m in msgs] == sorted({m["seq"] for m in msgs})
    assert all(f.opcode == SyscallOp.SYS_PUSH_BINARY for f in r.pushes) and len(r.pushes) < 50
    r.close()


def test_json_push_is_unchanged_without_format(any_path_kernel):
    a = any_path_kernel.client(strict=True)
    r = RawConnection(any_path_kernel.socket)
    for fmt in ({}, {"format": "json"}):
        me = r.call(SyscallOp.SYS_HELLO, {"push": {"messages": True, "batch": True, **fmt}})
        assert me["push"].get("format", "json") == "json"
        a.send_message({"n": 1}, to=me["agent_id"])
        msgs, _ = r.read_pushes(1)
        assert all(f.opcode == SyscallOp.SYS_PUSH for f in r.pushes)
        assert r.pushes[0].json()["kind"] == "messages"
        assert msgs[0]["messages"][0]["message"] == {"n": 1}
        r.pushes.clear()
    r.close()


def test_pushed_messages_come_in_the_binary_envelope_in_order_exactly_once(any_path_kernel):
    a, b = any_path_kernel.client(strict=True), any_path_kernel.client(strict=True)
    a_id, b_id = a.hello()["agent_id"], b.hello()["agent_id"]
    a.register_name("alice")
    assert b.set_push(messages=True)["push"]["format"] == "binary"
    n = 500
    a.send_batch([{"to": b_id, "message": {"i": i}} for i in range(n // 2)])
    for i in range(n // 2, n):
        a.send_message({"i": i}, to=b_id)
    got = []
    for m in b.messages(timeout=10):
        got.append(m)
        if len(got) == n:
            break
    assert [m["message"]["i"] for m in got] == list(range(n))
    assert [m["bytes"] for m in got] == [b'{"i":%d}' % i for i in range(n)]
    assert all(m["from"] == a_id and m["from_name"] == "alice" for m in got)
    assert len({m["seq"] for m in got}) == n and [m["seq"] for m in got] == sorted(m["seq"] for m in got)
    assert list(b.messages(timeout=0.3)) == []  # nothing twice
    assert b.recv_messages(10)["count"] == 0


# Spacing, escapes and numbers a JSON encoder would not write. `bytes` is the text as the kernel queued it
# (the bytes RECV's reply would carry): on both paths the value's text as its sender wrote it (whitespace
# around it, in the request, is not part of it; docs/fastpath.md).
RAW_TEXTS = ['{ "a" : [1,  2.50, "\\u00e9", 1e2] ,\n "é€":null }', '"\\ud83d\\ude00 😀"', "[ ]", '{"k":"v"}']


def test_a_pushed_message_has_its_bytes_as_queued(any_path_kernel):
    a, b = any_path_kernel.client(strict=True), any_path_kernel.client(strict=True)
    b_id = b.hello()["agent_id"]
    got, done = [], threading.Event()

    def on_message(m):
        got.append(m)
        if len(got) == len(RAW_TEXTS):
            done.set()

    b.on_message(on_message)
    assert b.hello()["push"]["format"] == "binary"
    for text in RAW_TEXTS:  # SEND's request with the message's text spliced in as it is
        reply = a.call(SyscallOp.SYS_SEND, '{"to":%d,"message":%s}' % (b_id, text)).json()
        assert reply["success"], reply
    assert done.wait(10), f"only {len(got)} messages pushed"
    assert [m["message"] for m in got] == [json.loads(t) for t in RAW_TEXTS]
    assert [m["bytes"] for m in got] == [t.encode() for t in RAW_TEXTS]


def test_a_new_connection_asks_for_the_binary_envelope_again(any_path_kernel):
    a, b = any_path_kernel.client(strict=True), any_path_kernel.client(strict=True, reconnect_window=5)
    b.set_push(messages=True)
    b._disconnect()  # as a dropped connection: the next call opens a new one and asks for the pushes again
    b_id = b.hello()["agent_id"]
    assert b.hello_info["push"] == {"messages": True, "events": False, "batch": True, "format": "binary"}
    a.send_message("x", to=b_id)
    (m,) = list(b.messages(timeout=1))
    assert m["bytes"] == b'"x"'
