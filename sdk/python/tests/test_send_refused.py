"""SEND_BATCH with ``results="none"`` and SEND_REFUSED (0x27) through the Python SDK: against a real kernel on
both of its paths (TypeScript, and the native fast path), and against a scripted fake kernel for what a real
one never sends (a SEND_REFUSED that is not JSON, more refusals than the client keeps)."""

from __future__ import annotations

import json
import threading
import warnings

import pytest

from clove_sdk import BadPushError, EncodedMessage, ProtocolError, SyscallOp
from clove_sdk.protocol import encode_frame

from conftest import count_frames
from test_client import FakeKernel

# ---------------------------------------------------------------- against a real kernel (both paths)


def _peer(kernel, name="bob"):
    """A client with ``name`` registered, to send to."""
    b = kernel.client(strict=True)
    b.register_name(name)
    return b


def _recv_all(client, n):
    got = []
    while len(got) < n:
        r = client.recv_messages(100, timeout=5)
        assert r["count"], f"only {len(got)} of {n} messages arrived"
        got += r["messages"]
    return [m["message"] for m in got]


def test_an_all_delivered_quiet_batch_is_not_answered(any_path_kernel):
    a, b = any_path_kernel.client(strict=True), _peer(any_path_kernel)
    b_id = b.hello()["agent_id"]
    wire = count_frames(a)
    refs = [a.send_batch([{"to": "bob", "message": [i, j]} for j in range(10)], results="none") for i in range(50)]
    assert refs == [{"ref": i} for i in range(1, 51)]
    assert [json.loads(f.payload)["ref"] for f in wire.frames] == list(range(1, 51))
    assert all(json.loads(f.payload)["results"] == "none" for f in wire.frames)
    # nothing came for them: the next frame read is this call's reply, and nothing is left over
    assert a.send_message("after", to=b_id) == {"success": True, "delivered_to": b_id}
    assert a.echo("x") == "x"
    assert not a._pending
    assert a.next_refusal(timeout=0.3) is None
    assert _recv_all(b, 501) == [[i, j] for i in range(50) for j in range(10)] + ["after"]


def test_refusals_reach_on_refused_with_their_ref_in_order_among_replies(any_path_kernel):
    a, b = any_path_kernel.client(strict=True), _peer(any_path_kernel)
    b_id = b.hello()["agent_id"]
    timeline, got, three = [], [], threading.Event()

    def on_refused(r):
        got.append(r)
        timeline.append(("refused", r["ref"]))
        if len(got) == 3:
            three.set()

    off = a.on_refused(on_refused)
    assert a.send_batch([{"to": "bob", "message": 1}], results="none") == {"ref": 1}
    assert a.send_batch([{"to": "bob", "message": 2}, {"to": "nobody", "message": "x"}], results="none") == {"ref": 2}
    assert a.echo("between") == "between"
    timeline.append(("reply", "echo"))
    refused = [{"to": 999999, "message": "x"}, {"to": b_id, "message": 3}, {"to_name": "nobody"}]
    assert a.send_batch(refused, results="none") == {"ref": 3}
    assert a.send_message(4, to=b_id) == {"success": True, "delivered_to": b_id}
    timeline.append(("reply", "send"))
    assert a.send_batch([], results="none") == {"ref": 4}  # the whole request refused
    assert three.wait(10), f"refusals: {got}"
    # each refusal reached the callback before the reply that followed it on the wire was returned
    assert timeline == [("refused", 2), ("reply", "echo"), ("refused", 3), ("reply", "send"), ("refused", 4)]
    assert got[0] == {
        "ref": 2,
        "success": True,
        "delivered_count": 1,
        "failed_count": 1,
        "results": [{"index": 1, "error": got[0]["results"][0]["error"], "code": "not_found"}],
    }
    assert got[1]["ref"] == 3 and (got[1]["delivered_count"], got[1]["failed_count"]) == (1, 2)
    assert [(r["index"], r["code"]) for r in got[1]["results"]] == [(0, "not_found"), (2, "not_found")]
    assert got[2]["ref"] == 4 and got[2]["success"] is False and got[2]["code"] == "invalid_request"
    off()
    # unregistered: the next refusal is kept, for next_refusal()
    assert a.send_batch([{"to_name": "nobody"}], results="none") == {"ref": 5}
    assert a.next_refusal(timeout=10)["ref"] == 5
    assert len(got) == 3
    assert _recv_all(b, 4) == [1, 2, 3, 4]


def test_refusals_kept_without_a_callback_go_to_the_first_one_registered(any_path_kernel):
    a, b = any_path_kernel.client(strict=True), _peer(any_path_kernel)
    for i in range(5):
        a.send_batch([{"to": "bob", "message": i}, {"to_name": f"nobody{i}"}], results="none")
    assert a.echo("x") == "x"  # its reply comes after the five refusals: they are read, and kept
    first, second = [], []
    off = a.on_refused(first.append)  # handed over at once, in order
    assert [r["ref"] for r in first] == [1, 2, 3, 4, 5]
    assert all(r["results"] == [{"index": 1, "error": r["results"][0]["error"], "code": "not_found"}] for r in first)
    a.on_refused(second.append)  # not kept twice: the second callback gets only what comes next
    assert second == []
    a.send_batch([{"to_name": "nobody"}], results="none")
    assert a.echo("y") == "y"
    assert [r["ref"] for r in first] == [1, 2, 3, 4, 5, 6] and [r["ref"] for r in second] == [6]
    off()
    assert _recv_all(b, 5) == [0, 1, 2, 3, 4]


def test_next_refusal_reads_the_socket_and_keeps_pushes_and_replies(any_path_kernel):
    a, b = any_path_kernel.client(strict=True), _peer(any_path_kernel)
    a_id = a.hello()["agent_id"]
    a.set_push(messages=True)
    for i in range(3):
        b.send_message(i, to=a_id)
    a.send_batch([{"to": "bob", "message": "ok"}], results="none")
    a.send_batch([{"to": "bob", "message": "ok"}, {"to": 999999, "message": "lost"}], results="none")
    r = a.next_refusal(timeout=10)  # the client makes no call: it reads the socket for it
    assert r["ref"] == 2 and [(x["index"], x["code"]) for x in r["results"]] == [(1, "not_found")]
    assert a.next_refusal(timeout=0.2) is None
    assert a.echo("z") == "z"
    got = []
    for m in a.messages(timeout=5):  # the pushes read meanwhile stayed queued
        got.append(m["message"])
        if len(got) == 3:
            break
    assert got == [0, 1, 2]


def test_a_whole_request_refused_comes_as_send_refused_and_queues_nothing(any_path_kernel):
    a, b = any_path_kernel.client(strict=True), _peer(any_path_kernel)
    # an item that is not an object (send_batch refuses to write one: the frame is made by hand)
    a.send(SyscallOp.SYS_SEND_BATCH, '{"messages":[{"to_name":"bob","message":1},7],"results":"none","ref":77}')
    r = a.next_refusal(timeout=10)
    assert r["ref"] == 77 and r["success"] is False and r["code"] == "invalid_request" and r["error"]
    assert "results" not in r
    # too many items: over the limit, refused as a whole
    ref = a.send_batch([{"to_name": "bob", "message": i} for i in range(4097)], results="none")["ref"]
    r = a.next_refusal(timeout=10)
    assert (r["ref"], r["success"], r["code"]) == (ref, False, "invalid_request")
    assert b.recv_messages(10)["count"] == 0


def test_a_batch_without_ref_is_refused_with_a_null_ref(any_path_kernel):
    a = any_path_kernel.client(strict=True)
    a.send(SyscallOp.SYS_SEND_BATCH, '{"messages":[{"to_name":"nobody"}],"results":"none"}')
    r = a.next_refusal(timeout=10)
    assert r["ref"] is None and r["failed_count"] == 1


def test_other_results_are_answered_as_before(any_path_kernel):
    a, _b = any_path_kernel.client(strict=True), _peer(any_path_kernel)
    items = [{"to": "bob", "message": EncodedMessage({"n": 1})}, {"to_name": "nobody"}]
    r = a.send_batch(items, results="refused")
    assert (r["delivered_count"], r["failed_count"]) == (1, 1) and r["results"][0]["index"] == 1
    r = a.send_batch(items)
    assert len(r["results"]) == 2 and "delivered_to" in r["results"][0]
    assert a.send_batch(items, results="none") == {"ref": 1}  # refs count the quiet batches only
    assert a.next_refusal(timeout=10)["ref"] == 1


# ---------------------------------------------------------------- against a scripted fake kernel


@pytest.fixture
def fake():
    k = FakeKernel()
    yield k
    k.close()


def refused_frame(payload, agent_id=1):
    body = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
    return encode_frame(SyscallOp.SYS_SEND_REFUSED, body, agent_id=agent_id)


def test_a_quiet_batch_is_written_without_waiting_and_numbered_per_client(fake):
    fake.handler = lambda op, p: None if op == SyscallOp.SYS_SEND_BATCH else FakeKernel.default(op, p)
    a, b = fake.client(timeout=2), fake.client(timeout=2)
    assert a.send_batch([{"to": "bob", "message": 1}], results="none") == {"ref": 1}
    assert a.send_batch([{"to": 3, "message": EncodedMessage([1, 2])}], results="none") == {"ref": 2}
    assert b.send_batch([{"to_name": "x"}], results="none") == {"ref": 1}
    assert a.echo("x") == "x"  # the fake never answered the batches: nothing waited for them
    assert b.echo("y") == "y"  # (and each connection's batches were recorded before its echo)
    batches = [p for op, p in fake.requests if op == SyscallOp.SYS_SEND_BATCH]
    assert sorted(batches, key=json.dumps) == sorted(
        [
            {"messages": [{"to_name": "bob", "message": 1}], "results": "none", "ref": 1},
            {"messages": [{"to": 3, "message": [1, 2]}], "results": "none", "ref": 2},
            {"messages": [{"to_name": "x"}], "results": "none", "ref": 1},
        ],
        key=json.dumps,
    )


def test_a_quiet_batch_is_not_sent_again_on_a_new_connection(fake):
    batches = []

    def handler(op, p):
        if op == SyscallOp.SYS_SEND_BATCH:
            batches.append(p)
            if len(batches) <= 2:
                return "CLOSE"  # the kernel went away right after the batch was written
        return FakeKernel.default(op, p)

    fake.handler = handler
    c = fake.client(timeout=5, reconnect_window=5)
    assert c.echo("a") == "a"
    assert c.send_batch([{"to": 1, "message": "m"}], results="none") == {"ref": 1}
    assert c.echo("b") == "b"  # on a new connection, and the batch was not written again
    assert len(fake.conns) == 2
    assert [op for op, _ in fake.requests] == [0, SyscallOp.SYS_SEND_BATCH, 0]
    # a batch that waits for its reply is sent again
    assert c.send_batch([{"to": 1, "message": "m"}]) == {"success": True}
    assert [op for op, _ in fake.requests] == [0, SyscallOp.SYS_SEND_BATCH, 0] + [SyscallOp.SYS_SEND_BATCH] * 2
    assert len(fake.conns) == 3


def test_a_quiet_batch_after_a_drop_opens_a_new_connection_and_is_written_once(fake):
    fake.handler = lambda op, p: None if op == SyscallOp.SYS_SEND_BATCH else FakeKernel.default(op, p)
    c = fake.client(timeout=5, reconnect_window=5)
    assert c.echo("a") == "a"
    c._disconnect()  # as a dropped connection: the quiet batch opens a new one
    assert c.send_batch([{"to": 1}], results="none") == {"ref": 1}
    assert c.echo("b") == "b"
    assert [op for op, _ in fake.requests] == [0, SyscallOp.SYS_SEND_BATCH, 0]
    assert len(fake.conns) == 2


def test_a_send_refused_between_replies_is_never_taken_as_a_reply(fake):
    refusal = {"ref": 1, "success": True, "delivered_count": 0, "failed_count": 1, "results": [{"index": 0}]}

    def handler(op, p):
        if op == SyscallOp.SYS_SEND_BATCH:
            return None
        if op == SyscallOp.SYS_NOOP:
            return ("RAW", refused_frame(refusal) + encode_frame(op, p, agent_id=1))
        return FakeKernel.default(op, p)

    fake.handler = handler
    c = fake.client(timeout=5)
    c.send_batch([{"to": 1}], results="none")
    assert c.echo("x") == "x"
    assert c.fetch("k") == {"success": True}
    assert c.next_refusal(timeout=0) == refusal
    assert c.next_refusal(timeout=0.1) is None


def test_a_send_refused_that_is_not_json_drops_the_connection(fake):
    noops = []

    def handler(op, p):
        if op == SyscallOp.SYS_NOOP:
            noops.append(p)
            if len(noops) == 1:
                return ("RAW", refused_frame(b"{not json") + encode_frame(op, p))
        return FakeKernel.default(op, p)

    fake.handler = handler
    c = fake.client(timeout=5)
    with pytest.raises(ProtocolError) as ei:
        c.echo("x")
    assert isinstance(ei.value, BadPushError) and ei.value.kind == "not_json"
    assert ei.value.opcode == SyscallOp.SYS_SEND_REFUSED
    assert not c.connected
    assert c.echo("y") == "y"  # the next call opens a new connection
    assert len(fake.conns) == 2


def test_a_send_refused_that_is_not_an_object_drops_the_connection_from_next_refusal(fake):
    def handler(op, p):
        if op == SyscallOp.SYS_SEND_BATCH:
            return ("RAW", refused_frame(b"[1]"))
        return FakeKernel.default(op, p)

    fake.handler = handler
    c = fake.client(timeout=5, reconnect_window=0)
    c.send_batch([{"to": 1}], results="none")
    with pytest.raises(ProtocolError):
        c.next_refusal(timeout=5)
    assert not c.connected


def test_a_send_refused_that_is_not_json_on_the_reader_thread_drops_the_connection(fake):
    noops = []

    def handler(op, p):
        if op == SyscallOp.SYS_NOOP:
            noops.append(p)
            if len(noops) == 1:
                return ("RAW", refused_frame(b"\xff\xfe"))  # and no reply
        return FakeKernel.default(op, p)

    fake.handler = handler
    c = fake.client(timeout=5, reconnect_window=5)
    c.connect()
    got = []
    c.on_refused(got.append)
    assert c._reader is not None and c._reader.is_alive()
    assert c.echo("x") == "x"  # its connection dropped: sent again on a new one
    assert len(fake.conns) == 2 and got == []
    assert c._reader is not None and c._reader.is_alive()  # the new connection is read too


def test_refusals_reach_a_callback_without_a_call_and_it_can_be_unregistered(fake):
    sent = []

    def handler(op, p):
        if op == SyscallOp.SYS_SEND_BATCH:
            ref = json.loads(p)["ref"]
            sent.append(ref)
            return ("RAW", refused_frame({"ref": ref, "success": False, "error": "no", "code": "invalid_request"}))
        return FakeKernel.default(op, p)

    fake.handler = handler
    c = fake.client(timeout=5)
    c.connect()
    got, came = [], threading.Event()

    def fn(r):
        got.append(r["ref"])
        came.set()

    off = c.on_refused(fn)
    c.send_batch([{"to": 1}], results="none")
    assert came.wait(5) and got == [1]  # brought by the reader thread: no call was made
    off()
    off()  # idempotent
    c.send_batch([{"to": 1}], results="none")
    assert c.next_refusal(timeout=5)["ref"] == 2 and got == [1]


def test_a_failing_callback_is_reported_and_the_others_still_run(fake):
    fake.handler = lambda op, p: (
        ("RAW", refused_frame({"ref": 1, "success": True}) + encode_frame(op, p))
        if op == SyscallOp.SYS_NOOP
        else FakeKernel.default(op, p)
    )
    c = fake.client(timeout=5)
    c.connect()
    got = []

    def bad(_r):
        raise ValueError("boom")

    c.on_refused(bad)
    c.on_refused(got.append)
    with pytest.warns(RuntimeWarning, match="boom"):
        assert c.echo("x") == "x"  # the refusal before its reply was handed on first
    assert got == [{"ref": 1, "success": True}]
    with pytest.warns(RuntimeWarning, match="boom"):
        assert c.echo("y") == "y"  # the reader thread lived on
    assert got == [{"ref": 1, "success": True}] * 2


def test_refusals_kept_are_bounded_with_one_warning(fake):
    n = 1030

    def handler(op, p):
        if op == SyscallOp.SYS_NOOP:
            frames = b"".join(refused_frame({"ref": i, "success": True}) for i in range(1, n + 1))
            return ("RAW", frames + encode_frame(op, p))
        return FakeKernel.default(op, p)

    fake.handler = handler
    c = fake.client(timeout=5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert c.echo("x") == "x"
        assert c.echo("y") == "y"  # more dropped: no second warning
    dropped = [w for w in caught if "SEND_REFUSED" in str(w.message)]
    assert len(dropped) == 1 and issubclass(dropped[0].category, RuntimeWarning)
    got = []
    c.on_refused(got.append)
    assert [r["ref"] for r in got] == list(range(n - 1024 + 1, n + 1))
