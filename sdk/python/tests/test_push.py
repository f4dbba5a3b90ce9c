"""Push delivery (HELLO push, PUSH 0x24) through the Python SDK against a real kernel: the blocking
iterators, the callback on a reader thread, a client that did not opt in, and a client that stops reading."""

from __future__ import annotations

import socket
import threading

from clove_sdk.protocol import FrameDecoder, SyscallOp, encode_frame


def test_messages_iterator_gets_pushes_in_order_exactly_once(kernel):
    a, b = kernel.client(), kernel.client(strict=True)
    b_id = b.hello()["agent_id"]
    assert b.set_push(messages=True)["push"] == {"messages": True, "events": False, "batch": True}
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
