"""The SDK rides through a kernel restart (docs/restart.md): within ``reconnect_window`` a call whose
connection drops is sent again on a new connection, after HELLO, subscriptions and names are made again;
after the window it fails with ConnectionClosedError; a window of 0 fails at once. Real kernels, SIGKILLed
and started again on the same socket and data dir."""

from __future__ import annotations

import threading
import time

import pytest
from clove_sdk import CloveClient
from clove_sdk.errors import ConnectionClosedError

pytestmark = pytest.mark.integration


def _crash(kernel) -> None:
    kernel.proc.kill()
    kernel.proc.wait(timeout=10)


def test_a_blocked_recv_and_later_calls_ride_through_a_kernel_restart(kernel):
    reconnects: list[float] = []
    c = CloveClient(kernel.socket, timeout=30, on_reconnect=lambda: reconnects.append(time.monotonic()))
    assert c.connect()
    kernel.clients.append(c)
    assert c.hello()["success"]
    assert c.register_name("py-waiter")["success"]
    assert c.subscribe(["tick"])["success"]

    got: dict = {}

    def blocked() -> None:
        try:
            got["reply"] = c.recv_messages(max_messages=1, timeout=20)
        except Exception as e:  # noqa: BLE001 - the test asserts there is none
            got["error"] = e

    t = threading.Thread(target=blocked)
    t.start()
    time.sleep(0.2)
    _crash(kernel)
    time.sleep(0.3)
    kernel.start()

    other = kernel.client()
    # The SDK reconnects within half a second; until it has, its name is not known to the new kernel.
    deadline = time.monotonic() + 10
    while not other.send_message({"after": "restart"}, to_name="py-waiter").get("success"):
        assert time.monotonic() < deadline, "the name never came back"
        time.sleep(0.1)
    t.join(timeout=30)
    assert "error" not in got, got
    assert [m["message"] for m in got["reply"]["messages"]] == [{"after": "restart"}]
    assert len(reconnects) == 1
    # Its subscriptions were made again: an event emitted now reaches it.
    assert other.emit_event("tick", {"n": 1})["success"]
    events = c.poll_events(max_events=10, timeout=5)["events"]
    assert any((e.get("data") or {}).get("n") == 1 for e in events), events
    # Later calls just work.
    assert c.echo("still here") == "still here"


def test_a_kernel_that_does_not_come_back_fails_the_call_after_the_window(kernel):
    c = CloveClient(kernel.socket, timeout=30, reconnect_window=1.0)
    assert c.connect()
    kernel.clients.append(c)
    assert c.hello()["success"]
    _crash(kernel)
    t0 = time.monotonic()
    with pytest.raises(ConnectionClosedError, match="within 1 s"):
        c.recv_messages(max_messages=1, timeout=5)
    assert time.monotonic() - t0 >= 0.9


def test_window_zero_fails_at_once(kernel):
    c = CloveClient(kernel.socket, timeout=30, reconnect_window=0)
    assert c.connect()
    kernel.clients.append(c)
    assert c.hello()["success"]
    _crash(kernel)
    t0 = time.monotonic()
    with pytest.raises(ConnectionClosedError):
        c.recv_messages(max_messages=1, timeout=5)
    assert time.monotonic() - t0 < 1.0
    # the next call reconnects, as before
    kernel.start()
    assert c.echo("back") == "back"


def test_an_agent_started_by_a_kernel_waits_for_it_on_its_first_connect(kernel, monkeypatch):
    # The kernel that started the agent dies before the agent's first call (a restart): the first connect
    # is refused, and retried until the new kernel listens, instead of the agent failing at start.
    _crash(kernel)
    monkeypatch.setenv("CLOVE_SOCKET", kernel.socket)
    monkeypatch.setenv("CLOVE_AGENT_ID", "7")
    reconnects: list[int] = []
    c = CloveClient(timeout=30, on_reconnect=lambda: reconnects.append(1))
    assert c.wait_for_kernel
    kernel.clients.append(c)
    threading.Timer(0.5, kernel.start).start()
    t0 = time.monotonic()
    assert c.echo("first") == "first"
    assert time.monotonic() - t0 >= 0.4
    assert reconnects == []  # a first connect is not a reconnection

    # connect() waits the same way
    _crash(kernel)
    c2 = CloveClient(timeout=30)
    kernel.clients.append(c2)
    threading.Timer(0.5, kernel.start).start()
    assert c2.connect() is True
    assert c2.echo("second") == "second"


def test_a_first_connect_fails_at_once_unless_a_kernel_started_the_process(kernel, monkeypatch):
    _crash(kernel)
    monkeypatch.delenv("CLOVE_AGENT_ID", raising=False)
    c = CloveClient(kernel.socket, timeout=30)
    assert not c.wait_for_kernel
    t0 = time.monotonic()
    with pytest.raises(ConnectionClosedError, match="cannot connect"):
        c.echo("x")
    assert c.connect() is False
    assert time.monotonic() - t0 < 1.0
    # started by a kernel but given another socket: not the kernel's, not waited for
    monkeypatch.setenv("CLOVE_AGENT_ID", "7")
    monkeypatch.setenv("CLOVE_SOCKET", kernel.socket + ".other")
    assert not CloveClient(kernel.socket).wait_for_kernel


def test_a_kernel_that_never_listens_fails_the_first_connect_after_the_window(kernel, monkeypatch):
    _crash(kernel)
    monkeypatch.setenv("CLOVE_SOCKET", kernel.socket)
    monkeypatch.setenv("CLOVE_AGENT_ID", "7")
    c = CloveClient(timeout=30, reconnect_window=0.6)
    t0 = time.monotonic()
    with pytest.raises(ConnectionClosedError, match=r"could not be reached within 0\.6 s"):
        c.echo("x")
    assert time.monotonic() - t0 >= 0.5
    # a socket path that cannot be a socket (ENOTDIR) is not waited for
    t0 = time.monotonic()
    with pytest.raises(ConnectionClosedError, match="cannot connect"):
        CloveClient("/proc/version/x", timeout=30, wait_for_kernel=True).echo("x")  # ENOTDIR
    assert time.monotonic() - t0 < 1.0


def test_callbacks_keep_coming_after_a_kernel_restart_without_a_call(kernel):
    # An agent that only listens (on_message, on_event) makes no call that would reconnect it: its reader
    # thread reconnects by itself, asks for its pushes, subscriptions and names again.
    got: list = []
    events: list = []
    arrived = threading.Event()
    reconnects: list[int] = []
    c = CloveClient(kernel.socket, timeout=30, on_reconnect=lambda: reconnects.append(1))
    kernel.clients.append(c)
    assert c.register_name("py-listener")["success"]
    assert c.subscribe(["tick"])["success"]
    c.on_message(lambda m: (got.append(m["message"]), arrived.set()))
    c.on_event(lambda e: events.append(e.get("data")))
    other = kernel.client()
    assert other.send_message({"n": 1}, to_name="py-listener")["success"]
    assert arrived.wait(10)
    arrived.clear()

    _crash(kernel)
    time.sleep(0.3)
    kernel.start()
    other = kernel.client()
    deadline = time.monotonic() + 10
    while not other.send_message({"n": 2}, to_name="py-listener").get("success"):
        assert time.monotonic() < deadline, "the listener's name never came back"
        time.sleep(0.1)
    assert arrived.wait(10), got
    assert got == [{"n": 1}, {"n": 2}]
    assert reconnects == [1]
    assert other.emit_event("tick", {"n": 3})["success"]
    deadline = time.monotonic() + 10
    while not any((e or {}).get("n") == 3 for e in events):
        assert time.monotonic() < deadline, events
        time.sleep(0.05)
    # Calls from the program go through the new reader, as before the restart.
    assert c.echo("still here") == "still here"


def test_a_disconnected_listener_does_not_reconnect_by_itself(kernel):
    c = CloveClient(kernel.socket, timeout=30)
    kernel.clients.append(c)
    c.on_message(lambda m: None)
    c.disconnect()
    time.sleep(0.3)
    assert not c.connected
    # and one whose kernel does not come back gives up after the window: the next call raises
    c2 = CloveClient(kernel.socket, timeout=30, reconnect_window=0.5)
    kernel.clients.append(c2)
    c2.on_message(lambda m: None)
    _crash(kernel)
    time.sleep(1.2)
    assert not c2.connected
    t0 = time.monotonic()
    with pytest.raises(ConnectionClosedError):
        c2.echo("x")
    assert time.monotonic() - t0 < 2
