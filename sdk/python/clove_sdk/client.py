"""Client for the Clove kernel over its Unix socket (docs/protocol.md).

Method names, signatures and return shapes follow the public Clove Python SDK, so existing agent code
works unchanged; the public SDK's known bugs are fixed (see README) and the Clove extensions are offered
as extra keyword arguments.

Errors:

* Transport failures — the socket cannot be opened, is closed, a reply does not arrive within
  ``timeout``, or the byte stream is broken — always raise (:class:`ConnectionClosedError`,
  :class:`TimeoutError`, :class:`ProtocolError`). Afterwards the client is disconnected; the next call
  reconnects.
* Except a kernel restart: when a connection that was open drops, a call is sent again on a new
  connection for up to ``reconnect_window`` seconds (default ``$CLOVE_RECONNECT_WINDOW_MS``, else 30 s;
  0 turns it off) before :class:`ConnectionClosedError` is raised. HELLO, subscriptions and names are
  made again on the new connection. At least once: a request the old kernel executed but did not
  answer is executed again (docs/restart.md).
* Error *replies* of the kernel are returned as the reply dict (``{"success": False, "error": …,
  "code": …}``), as the public SDK does. With ``CloveClient(strict=True)``, or ``check=True`` on a single
  call, they are raised as the :class:`KernelError` subclass of their ``code`` instead
  (``check=False`` turns strict mode off for one call).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import threading
import time
from collections import deque

# The C module under `socket`: the client needs its socket type and four constants, and socket.py costs
# about 2 ms more at start-up (selectors, array, enum classes for every AF_/SOCK_ constant): time every
# restart of an agent pays (bench/restart.ts, clove/sdk). The same type socket.socket subclasses.
try:
    import _socket as socket
except ImportError:  # another Python without it: the public module
    import socket  # type: ignore[no-redef]
from collections.abc import Callable, Iterable, Iterator, Mapping

# typing costs an import at start-up; with PEP 563 annotations it is needed by type checkers only.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TypeVar

from .errors import (
    BadPushError,
    ConnectionClosedError,
    KernelError,
    ProtocolError,
    TimeoutError,
    UnexpectedReplyError,
    kernel_error,
)
from .protocol import (
    DEFAULT_MAX_PAYLOAD,
    DEFAULT_SOCKET_PATH,
    SOCKET_ENV,
    Frame,
    FrameDecoder,
    decode_push_binary,
    encode_frame,
)
from .protocol import _Ops as SyscallOp  # plain ints (protocol.SyscallOp, the enum, is made on first use)

__all__ = [
    "CloveClient",
    "AgentOSClient",
    "ThinkStream",
    "connect",
    "durable_step",
    "DEFAULT_SOCKET_PATH",
    "default_socket_path",
]

if TYPE_CHECKING:
    _F = TypeVar("_F", bound=Callable[..., Any])

_RECV_CHUNK = 65536
# the longest single kernel-side wait one wait_message()/wait_event() step asks for
_WAIT_STEP_S = 30.0
# pushed items held for messages()/events(); past this the reader thread stops reading until some are taken
_PUSH_BUFFER = 4096
# SEND_REFUSED frames kept while no on_refused() callback is registered; older ones are dropped
_REFUSALS_KEPT = 1024


def default_socket_path() -> str:
    """``$CLOVE_SOCKET`` if set (the kernel sets it for the agents it spawns), else ``/tmp/clove.sock``."""
    return os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET_PATH


# connect() errnos that mean no kernel listens on the socket (yet): waited out by ``wait_for_kernel``
_NO_KERNEL = (errno.ECONNREFUSED, errno.ENOENT)


def _started_by_kernel(path: str) -> bool:
    """A kernel started this process (it set ``$CLOVE_AGENT_ID``) and ``path`` is the socket it gave."""
    return bool(os.environ.get("CLOVE_AGENT_ID")) and path == os.environ.get(SOCKET_ENV)


def _backoff(attempt: int, left: float) -> None:
    """The pause before reconnection attempt ``attempt`` + 1: 20 ms doubling to 0.5 s, never past ``left``."""
    time.sleep(min(0.02 * 2 ** min(attempt, 5), 0.5, left))


def _is_error(reply: Any) -> bool:
    """True for an error reply. Our kernel always sends ``success``; the public kernel's SPAWN/KILL errors
    carry only ``error``."""
    if not isinstance(reply, dict):
        return False
    if "success" in reply:
        return reply["success"] is False
    return "error" in reply


def _given(**fields: Any) -> dict:
    """A request of the fields that were given: None means left out (the kernel's default)."""
    return {k: v for k, v in fields.items() if v is not None}


def _window_from_env() -> float:
    """``$CLOVE_RECONNECT_WINDOW_MS`` in seconds, else 30."""
    try:
        ms = float(os.environ.get("CLOVE_RECONNECT_WINDOW_MS", "30000"))
    except ValueError:
        ms = 30000.0
    return max(0.0, ms) / 1000.0


#: A connection the warm standby launcher opened while parked (clove_sdk._standby): (path, socket). The first
#: client of this process that connects to that path takes it instead of connecting.
_preconnected: tuple[str, socket.socket] | None = None
_preconnected_lock = threading.Lock()


def _take_preconnected(path: str) -> socket.socket | None:
    global _preconnected
    with _preconnected_lock:  # two clients connecting at once in two threads: one takes it
        held, _preconnected = _preconnected, None
    if held is None:
        return None
    if held[0] == path:
        return held[1]
    held[1].close()
    return None


def _ms(seconds: float) -> int:
    return max(0, int(round(seconds * 1000)))


class EncodedMessage:
    """A message encoded once, to be sent many times without being encoded again (:meth:`CloveClient.send_message`,
    :meth:`CloveClient.send_batch`), as a NATS or Redis client publishes one buffer over and over. It holds the
    JSON text the client would have written for ``value`` (one JSON value by construction), so the wire carries
    the same bytes and the receiver gets the value."""

    __slots__ = ("_json",)

    def __init__(self, value: Any) -> None:
        self._json = json.dumps(value, separators=(",", ":"))

    def __repr__(self) -> str:
        return f"EncodedMessage({self._json[:40]!r}{'...' if len(self._json) > 40 else ''})"

    @property
    def byte_length(self) -> int:
        """The size of its JSON text in bytes (ASCII: non-ASCII characters are escaped, as the client does)."""
        return len(self._json)


def _item_head(item: Mapping[str, Any]) -> str:
    """A request object's JSON up to where its message goes: ``{"to":3,"message":``."""
    head = json.dumps({k: v for k, v in item.items() if k != "message"}, separators=(",", ":"))
    return head[:-1] + ("," if len(head) > 2 else "") + '"message":'


def _item_json(item: Mapping[str, Any], heads: dict[tuple[Any, Any], str] | None = None) -> str:
    """One request object as JSON, an EncodedMessage ``message`` (always the last key) spliced in as it is.
    With ``heads``, the head of an item whose target is a plain id and/or name is encoded once per target
    (SEND_BATCH: a burst to one peer adds per item only its bytes)."""
    msg = item.get("message")
    if not isinstance(msg, EncodedMessage):
        return json.dumps(item, separators=(",", ":"))
    to, to_name = item.get("to"), item.get("to_name")
    if heads is None or not (to is None or type(to) is int) or not (to_name is None or type(to_name) is str):
        return _item_head(item) + msg._json + "}"
    head = heads.get((to, to_name))
    if head is None:
        head = heads[(to, to_name)] = _item_head(item)
    return head + msg._json + "}"


def _refusal(frame: Frame) -> dict:
    """A SEND_REFUSED frame's payload; one that is not a JSON object breaks the stream (BadPushError)."""
    try:
        refusal = frame.json()
    except ValueError as e:
        raise BadPushError("not_json", "SEND_REFUSED frame from the kernel is not JSON", opcode=frame.opcode) from e
    if not isinstance(refusal, dict):
        raise BadPushError("not_json", "SEND_REFUSED frame from the kernel is not a JSON object", opcode=frame.opcode)
    return refusal


# A callback's failure is its own: raised out of the read that delivered the refusal, it would end the
# reader thread, or leave the reply that read had routed to be taken by the next call; it is reported
# instead, as a warning.
def _call_refused(fn: Callable[[dict], Any], refusal: dict) -> None:
    """``fn(refusal)``, an exception it raises turned into a RuntimeWarning."""
    try:
        fn(refusal)
    except Exception as e:  # noqa: BLE001 - reported, see above
        import warnings

        warnings.warn(f"on_refused callback {fn!r} raised {e!r}", RuntimeWarning, stacklevel=2)


class CloveClient:
    """A connection to the Clove kernel.

    ``socket_path`` defaults to ``$CLOVE_SOCKET``, else ``/tmp/clove.sock``. ``timeout`` (seconds, None =
    wait forever) bounds how long a call waits for its reply; calls that ask the kernel to wait (e.g.
    ``recv_messages(timeout=5)``) get that wait on top. ``strict=True`` raises kernel error replies as
    typed exceptions.

    The client connects on :meth:`connect`, on entering ``with``, or lazily on the first call. It is
    thread-safe: each call holds a lock from request to reply (the kernel answers in order), so a call
    that makes the kernel wait delays other threads' calls on the same client — give such threads their
    own client.
    """

    def __init__(
        self,
        socket_path: str | None = None,
        timeout: float | None = None,
        *,
        strict: bool = False,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        reconnect_window: float | None = None,
        on_reconnect: Callable[[], Any] | None = None,
        wait_for_kernel: bool | None = None,
    ) -> None:
        self.socket_path = socket_path or default_socket_path()
        #: a first connect that finds no kernel listening (refused, no socket file: the kernel that started
        #: this agent is restarting) is retried for ``reconnect_window`` instead of failing; default: when
        #: a kernel started this process (``$CLOVE_AGENT_ID`` set) and the socket is its ``$CLOVE_SOCKET``
        self.wait_for_kernel = _started_by_kernel(self.socket_path) if wait_for_kernel is None else wait_for_kernel
        #: seconds a dropped connection is retried before a call fails (kernel restarts, docs/restart.md)
        self.reconnect_window = _window_from_env() if reconnect_window is None else max(0.0, reconnect_window)
        #: called after each reconnection that ended an outage
        self.on_reconnect = on_reconnect
        self._ever_connected = False
        self._outage = False
        # disconnect() was called since the last connect: a reader thread does not reconnect by itself
        self._stopped = False
        # the reader's connection dropped and a new one is being opened (push iterators keep waiting)
        self._reconnecting = False
        self._restoring = False
        self._hello_said = False
        self._topics: set[str] = set()
        self._names: list[str] = []
        self.timeout = timeout
        self.strict = strict
        self.max_payload = max_payload
        self._sock: socket.socket | None = None
        self._decoder = FrameDecoder(max_payload=2**63)  # replies are not size-limited (reference §1.1)
        self._pending: deque[Frame] = deque()
        self._lock = threading.RLock()
        self._agent_id = 0
        #: ``"agent"``, ``"operator"`` or ``"client"`` once :meth:`hello` was called
        self.role: str | None = None
        #: this connection's name once :meth:`hello` was called (agents: their spawn name)
        self.name: str | None = os.environ.get("CLOVE_AGENT_NAME") or None
        #: the last HELLO reply
        self.hello_info: dict | None = None
        #: the whole reply of the last kill()/pause()/resume() (they return a bool, as in the public SDK)
        self.last_reply: Any = None
        # push delivery (HELLO push): what was asked, what arrived, and the optional reader thread
        self._push_mode = {"messages": False, "events": False}
        # messages are asked for in the binary envelope (push.format) until a kernel refuses it
        self._push_binary = True
        self._pushed: dict[str, deque] = {"message": deque(), "event": deque()}
        self._callbacks: dict[str, Any] = {}
        self._cond = threading.Condition()
        self._reader: threading.Thread | None = None
        self._reader_error: Exception | None = None
        # keys of the journaled steps open on the current connection, innermost last (docs/durable.md)
        self._steps: list[str] = []
        # SEND_REFUSED (send_batch results="none"): the callbacks, what came while there was none (the
        # last _REFUSALS_KEPT), and the lock that keeps refusals in order from frame to callback
        self._refused_fns: list[Callable[[dict], Any]] = []
        self._refusals: deque[dict] = deque()
        self._refusals_dropped = False
        self._refusal_lock = threading.RLock()
        # the last ``ref`` given to a send_batch(results="none"), numbered from 1 per client
        self._batch_refs = 0

    # ------------------------------------------------------------------ connection

    @property
    def agent_id(self) -> int:
        """The id the kernel gave this connection (from HELLO, and from every reply header)."""
        return self._agent_id

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def connect(self) -> bool:
        """Opens the connection (a no-op when connected). Returns True; if the socket cannot be reached,
        returns False like the public SDK, or raises :class:`ConnectionClosedError` in strict mode. With
        ``wait_for_kernel``, a kernel that is not listening yet is waited for within ``reconnect_window``."""
        try:
            try:
                self._connect()
            except ConnectionClosedError as e:
                if not (self._may_retry(e) and not self._ever_connected):
                    raise
                self._reconnect_after(e)
            return True
        except ConnectionClosedError:
            if self.strict:
                raise
            return False

    def _connect(self) -> None:
        with self._lock:
            if self._sock is not None:
                return
            self._stopped = False
            sock = _take_preconnected(self.socket_path)
            if sock is not None:
                sock.settimeout(self.timeout)
            else:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.settimeout(self.timeout)
                    sock.connect(self.socket_path)
                except OSError as e:
                    sock.close()
                    err = ConnectionClosedError(f"cannot connect to {self.socket_path}: {e}")
                    err.no_kernel = e.errno in _NO_KERNEL  # type: ignore[attr-defined]
                    raise err from e
            self._sock = sock
            self._decoder.reset()
            self._pending.clear()
            self._reader_error = None
            again, self._ever_connected = self._ever_connected, True
            self._restoring = True
            try:
                if self._push_mode["messages"] or self._push_mode["events"]:
                    # a new connection pushes nothing until asked: ask again
                    self._hello_push(None)
                elif again and self._hello_said:
                    self.call_json(SyscallOp.SYS_HELLO, {})
                if self._callbacks or self._refused_fns:
                    self._start_reader()  # read again: a callback wants what comes unasked
                if again and self._topics:
                    self.call_json(SyscallOp.SYS_SUBSCRIBE, {"event_types": sorted(self._topics)})
                for name in self._names if again else []:
                    self.call_json(SyscallOp.SYS_REGISTER, {"name": name})
            finally:
                self._restoring = False
            if self._outage:
                self._outage = False
                if self.on_reconnect is not None:
                    self.on_reconnect()

    def _may_retry(self, e: BaseException) -> bool:
        """A dropped connection is retried (a kernel restart) unless turned off, never opened (except a
        first connect that finds no kernel, with ``wait_for_kernel``), inside a reconnection, or inside a
        journaled step (its calls must not move to another connection)."""
        return (
            isinstance(e, ConnectionClosedError)
            and not isinstance(e, TimeoutError)
            and not getattr(e, "no_retry", False)
            and self.reconnect_window > 0
            and (self._ever_connected or (self.wait_for_kernel and getattr(e, "no_kernel", False)))
            and not self._restoring
            and not self._steps
        )

    def _reconnect_after(self, e: ConnectionClosedError) -> None:
        """Opens the connection again within the window (raises the last failure after it)."""
        since, attempt = time.monotonic(), 0
        while True:
            self._wait_out(e, since, attempt)
            try:
                self._connect()
                return
            except ConnectionClosedError as again:
                if not self._ever_connected and not getattr(again, "no_kernel", False):
                    raise  # waiting for a kernel to listen, not for a socket this process may not open
                e = again
                attempt += 1

    def _wait_out(self, e: ConnectionClosedError, since: float, attempt: int) -> None:
        """One pause of the reconnection after ``e``; raises once the window since ``since`` is over."""
        left = since + self.reconnect_window - time.monotonic()
        if left <= 0:
            again = "again " if self._ever_connected else ""
            raise ConnectionClosedError(
                f"{e} (the kernel could not be reached {again}within {self.reconnect_window:g} s)"
            ) from e
        self._outage = self._outage or self._ever_connected  # a first connect is not a reconnection
        self._disconnect()
        _backoff(attempt, left)

    def disconnect(self) -> None:
        """Closes the connection (idempotent). A reader thread's reconnection in progress stops too."""
        with self._lock:
            self._stopped = True
        self._disconnect()

    def _disconnect(self) -> None:
        """Closes the connection (after an error, or before the next attempt of a reconnection)."""
        with self._lock:
            sock, self._sock = self._sock, None
            self._pending.clear()
            self._decoder.reset()
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)  # wakes a reader thread blocked in recv
                except OSError:
                    pass
                try:
                    sock.close()
                except OSError:
                    pass
        with self._cond:
            self._cond.notify_all()
        reader = self._reader
        if reader is not None and reader is not threading.current_thread():
            reader.join(timeout=5)

    close = disconnect

    def __enter__(self) -> CloveClient:
        self._connect()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.disconnect()

    def __repr__(self) -> str:
        state = "connected" if self._sock else "disconnected"
        return f"<CloveClient {self.socket_path!r} {state} agent_id={self._agent_id} role={self.role}>"

    # ------------------------------------------------------------------ frames

    def send(self, opcode: int, payload: bytes | str = b"") -> bool:
        """Writes one request frame (low level; prefer :meth:`call`). Raises on a closed connection."""
        with self._lock:
            if self._sock is None and self._steps:
                # The kernel closed the steps with the old connection: a call on a new one would run
                # outside them, unjournaled. The step's code must stop here (run again, it replays).
                lost, self._steps = self._steps, []
                err = ConnectionClosedError(
                    f"the connection to the kernel closed inside journaled step(s) {lost}: calls on a new "
                    "connection would not be journaled; leave the step and run it again (it replays)"
                )
                err.no_retry = True  # type: ignore[attr-defined]
                raise err
            self._connect()
            data = encode_frame(opcode, payload, self._agent_id, max_payload=self.max_payload)
            assert self._sock is not None
            try:
                self._sock.sendall(data)
            except socket.timeout as e:
                self._disconnect()
                raise TimeoutError(f"timed out writing to {self.socket_path}") from e
            except OSError as e:
                self._disconnect()
                raise ConnectionClosedError(f"connection to the kernel lost: {e}") from e
            return True

    def recv(self) -> Frame:
        """Reads the next reply frame (low level; waits up to the client's timeout)."""
        with self._lock:
            return self._recv_frame(self.timeout)

    # A SEND_REFUSED is handed on before the frames after it are routed: its callbacks have run before the
    # reply that follows it on the wire is given to its caller (refusals keep their place among replies).
    def _route(self, frames: list[Frame]) -> None:
        """Pushed frames (their own opcode, between replies) go to the push queues, SEND_REFUSED frames to
        the on_refused() callbacks (or are kept); replies, in order, to ``_pending``."""
        while frames:
            callbacks = []
            refusal = None
            with self._cond:
                for i, f in enumerate(frames):
                    self._agent_id = f.agent_id
                    if f.opcode == SyscallOp.SYS_SEND_REFUSED:
                        # answers no request: a send_batch(results="none") had something refused
                        refusal, frames = _refusal(f), frames[i + 1 :]
                        break
                    if f.opcode == SyscallOp.SYS_PUSH_BINARY:
                        # push.format "binary": messages only, each with its JSON text as ``bytes``
                        fn = self._callbacks.get("message")
                        for one in decode_push_binary(f.payload):
                            if fn is not None:
                                callbacks.append((fn, one))
                            else:
                                self._pushed["message"].append(one)
                        continue
                    if f.opcode != SyscallOp.SYS_PUSH:
                        self._pending.append(f)
                        continue
                    try:
                        item = f.json()
                    except ValueError as e:
                        raise BadPushError(
                            "not_json", "pushed frame from the kernel is not JSON", opcode=f.opcode
                        ) from e
                    kind = item.pop("kind", None) if isinstance(item, dict) else None
                    # push.batch: several messages to a frame, handed on one by one
                    items = item.get("messages", []) if kind == "messages" else [item]
                    if kind == "messages":
                        kind = "message"
                    if kind not in self._pushed:
                        continue
                    fn = self._callbacks.get(kind)
                    for one in items:
                        if fn is not None:
                            callbacks.append((fn, one))
                        else:
                            self._pushed[kind].append(one)
                else:
                    frames = []
                self._cond.notify_all()
            for fn, item in callbacks:
                fn(item)
            if refusal is not None:
                self._tell_refused(refusal)

    # The reader thread is looked for before each read: a callback run while this thread read (on_refused
    # registered from a refusal callback) may have started one, and two threads must not read one socket.
    def _recv_frame(self, timeout: float | None) -> Frame:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._reader is not None:
                return self._await_reply(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if self._pending:
                return self._pending.popleft()
            try:
                self._read_some(deadline)
            except TimeoutError as e:
                raise TimeoutError(f"no reply from the kernel within {timeout:g} s") from e

    def _await_reply(self, timeout: float | None) -> Frame:
        """With a reader thread, replies arrive through it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._pending:
                if self._reader_error is not None or self._sock is None:
                    raise ConnectionClosedError(f"connection to the kernel lost: {self._reader_error}")
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._cond.wait(left)
            if self._pending:
                return self._pending.popleft()
        self._disconnect()
        raise TimeoutError(f"no reply from the kernel within {timeout:g} s")

    def _read_some(self, deadline: float | None, *, idle_ok: bool = False) -> bool:
        """Reads until at least one frame arrived (a reply or a push) and routes what came. At ``deadline``
        (monotonic) it returns False when ``idle_ok`` (waiting for a push), else disconnects and raises."""
        sock = self._sock
        if sock is None:
            raise ConnectionClosedError("not connected")
        while True:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    if idle_ok:
                        return False
                    self._disconnect()
                    raise TimeoutError("no reply from the kernel in time")
                sock.settimeout(left)
            else:
                sock.settimeout(None)
            try:
                chunk = sock.recv(_RECV_CHUNK)
            except socket.timeout as e:
                if idle_ok:
                    return False
                self._disconnect()
                raise TimeoutError("no reply from the kernel in time") from e
            except OSError as e:
                self._disconnect()
                raise ConnectionClosedError(f"connection to the kernel lost: {e}") from e
            if not chunk:
                self._disconnect()
                raise ConnectionClosedError("the kernel closed the connection")
            try:
                frames = self._decoder.feed(chunk)
                if frames:
                    self._route(frames)
            except ProtocolError:
                self._disconnect()
                raise
            if frames:
                return True

    def call(self, opcode: int, payload: bytes | str = b"", *, wait: float = 0.0) -> Frame:
        """Sends one request and returns its reply frame. ``wait`` is how long the kernel was asked to
        hold the reply; it is added to the client's timeout. A connection that drops is opened again and
        the request sent again, for up to ``reconnect_window`` seconds."""
        with self._lock:
            since, attempt = 0.0, 0
            while True:
                try:
                    return self._call_once(opcode, payload, wait)
                except ConnectionClosedError as e:
                    if not self._may_retry(e):
                        raise
                    if attempt == 0:
                        since = time.monotonic()
                    self._wait_out(e, since, attempt)
                    attempt += 1

    def _call_once(self, opcode: int, payload: bytes | str, wait: float) -> Frame:
        with self._lock:
            self.send(opcode, payload)
            timeout = None if self.timeout is None else self.timeout + max(0.0, wait)
            reply = self._recv_frame(timeout)
            if reply.opcode != int(opcode):
                self._disconnect()
                raise UnexpectedReplyError(
                    f"reply opcode 0x{reply.opcode:02x} to a request 0x{int(opcode):02x}: {reply.payload_str[:200]}",
                    opcode=reply.opcode,
                )
            return reply

    def call_json(
        self,
        opcode: int,
        payload: Any = None,
        *,
        check: bool | None = None,
        wait: float = 0.0,
    ) -> Any:
        """Sends ``payload`` (default ``{}``) as JSON and returns the parsed reply. A reply that is not JSON
        becomes ``{"success": False, "error": <text>}``. Error replies raise when ``check`` (default: the
        client's ``strict``) is true."""
        body = json.dumps({} if payload is None else payload, separators=(",", ":"))
        return self._call_text(opcode, body, check, wait)

    def _call_text(self, opcode: int, body: str, check: bool | None, wait: float = 0.0) -> Any:
        """call_json with the request's JSON text already made."""
        reply = self.call(opcode, body, wait=wait)
        try:
            data = reply.json()
        except ValueError:
            data = {"success": False, "error": reply.payload_str, "code": "invalid_reply"}
        self._check(data, check)
        return data

    def _check(self, reply: Any, check: bool | None) -> None:
        if (self.strict if check is None else check) and _is_error(reply):
            raise kernel_error(reply)

    # ------------------------------------------------------------------ push delivery

    def set_push(self, messages: bool = False, events: bool = False, *, check: bool | None = None) -> dict:
        """HELLO ``push`` (ext): the kernel sends this connection its messages and/or subscribed events as
        they arrive (PUSH frames; messages several to a frame, in the binary envelope PUSH_BINARY when the
        kernel has it), taking them as RECV / POLL_EVENTS do (messages without a lease). ``set_push()``
        turns it off. Returns the HELLO reply (``push`` says what is on, ``push.format`` how messages come)."""
        self._push_mode = {"messages": bool(messages), "events": bool(events)}
        return self._hello_push(check)

    # A kernel older than PUSH_BINARY refuses push.format as an invalid request: it is asked again
    # without it, and pushes JSON (whose messages have no ``bytes``); this client does not ask for the
    # envelope again.
    def _hello_push(self, check: bool | None) -> dict:
        """HELLO with the push mode in force; returns its reply."""
        request = {"push": self._push_request()}
        reply = self.call_json(SyscallOp.SYS_HELLO, request, check=False)
        if "format" in request["push"] and _is_error(reply) and reply.get("code") == "invalid_request":
            self._push_binary = False
            reply = self.call_json(SyscallOp.SYS_HELLO, {"push": self._push_request()}, check=False)
        self._check(reply, check)
        return reply

    def _push_request(self) -> dict:
        # messages several to a frame (push.batch), in the binary envelope (push.format): fewer frames, and
        # no JSON around each message to parse; handed on one by one
        if not self._push_mode["messages"]:
            return {**self._push_mode, "batch": False}
        return {**self._push_mode, "batch": True, **({"format": "binary"} if self._push_binary else {})}

    def _iterate(self, kind: str, timeout: float | None):
        key = "messages" if kind == "message" else "events"
        if not self._push_mode[key]:
            self.set_push(**{**self._push_mode, key: True}, check=True)
        queue = self._pushed[kind]
        while True:
            deadline = None if timeout is None else time.monotonic() + timeout
            item = None
            with self._cond:
                if queue:
                    item = queue.popleft()
                    self._cond.notify_all()  # a reader thread waiting for room reads again
            if item is not None:
                yield item
                continue
            if self._reader is not None or self._reconnecting:
                with self._cond:
                    while not queue and (
                        self._reconnecting or (self._sock is not None and self._reader_error is None)
                    ):
                        left = None if deadline is None else deadline - time.monotonic()
                        if left is not None and left <= 0:
                            return
                        self._cond.wait(left)
                    if not queue:
                        return
                continue
            with self._lock:
                if queue:
                    continue
                if self._sock is None:
                    return
                try:
                    if not self._read_some(deadline, idle_ok=True):
                        return
                except ConnectionClosedError as e:
                    if not self._may_retry(e):
                        raise
                    self._reconnect_after(e)

    def messages(self, timeout: float | None = None):
        """A blocking iterator over the messages the kernel pushes (opts in on first use):
        ``for m in client.messages(): …`` yields ``{from, from_name, message, age_ms, seq, bytes}`` in order.
        ``bytes`` is the message's JSON text as the kernel queued it, the bytes RECV's reply would carry
        (``message`` is it parsed): on the fast path the bytes its sender wrote, on the TypeScript path the
        value re-encoded. It is there when the kernel pushes the binary envelope (PUSH_BINARY, which the
        client asks for), not from a kernel older than it, which pushes JSON.
        ``timeout`` (seconds) ends the iteration after that long without a message; the iteration also
        ends when the client is closed. Without a reader thread (:meth:`on_message`), the iterator reads
        the socket itself, holding the client's lock while it waits."""
        return self._iterate("message", timeout)

    def events(self, timeout: float | None = None):
        """A blocking iterator over the events of the caller's subscriptions, as the kernel pushes them
        (``{type, data, source_agent_id, timestamp}``, and ``dropped`` when events were lost)."""
        return self._iterate("event", timeout)

    def on_message(self, fn) -> None:
        """Calls ``fn(message)`` on a reader thread for each pushed message (opts in). Calls on this client
        keep working from other threads: their replies come through the reader. ``fn`` runs on the
        reader: while it runs nothing else is read (the kernel holds the rest), so keep it short, and do
        not make calls on this client from it (their replies would wait for the reader)."""
        self._subscribe_push("message", "messages", fn)

    def on_event(self, fn) -> None:
        """Calls ``fn(event)`` on the reader thread for each pushed event (see :meth:`on_message`)."""
        self._subscribe_push("event", "events", fn)

    def _subscribe_push(self, kind: str, key: str, fn) -> None:
        with self._lock:
            self._connect()
            with self._cond:
                self._callbacks[kind] = fn
                # what arrived before the callback was set goes to it first
                held = list(self._pushed[kind])
                self._pushed[kind].clear()
            for item in held:
                fn(item)
            if not self._push_mode[key]:
                self.set_push(**{**self._push_mode, key: True}, check=True)
            self._start_reader()

    def _start_reader(self) -> None:
        if self._reader is not None and self._reader.is_alive():
            return
        sock = self._sock
        if sock is None:
            return
        sock.settimeout(None)
        t = threading.Thread(target=self._read_loop, args=(sock,), name="clove-push-reader", daemon=True)
        self._reader = t
        t.start()

    def _read_loop(self, sock: socket.socket) -> None:
        """The reader thread: routes every frame (replies to the waiting callers, pushes to callbacks or
        queues) until the connection ends. A queue at _PUSH_BUFFER stops the reading until it is taken from."""
        try:
            while True:
                with self._cond:
                    while (
                        len(self._pushed["message"]) + len(self._pushed["event"]) >= _PUSH_BUFFER
                        and self._sock is sock
                    ):
                        self._cond.wait()
                if self._sock is not sock:
                    return
                try:
                    chunk = sock.recv(_RECV_CHUNK)
                except OSError as e:
                    raise ConnectionClosedError(f"connection to the kernel lost: {e}") from e
                if not chunk:
                    raise ConnectionClosedError("the kernel closed the connection")
                frames = self._decoder.feed(chunk)
                if frames:
                    self._route(frames)
        except Exception as e:  # noqa: BLE001 - handed to the callers waiting for replies
            if isinstance(e, ProtocolError) and self._sock is sock:
                # The stream cannot be trusted: drop the connection (the next call opens a new one). Not
                # _disconnect(): a caller waiting for its reply holds the client's lock.
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            # The kernel went away (not this client's own disconnect): callbacks keep coming once it is
            # back, without the program making a call (docs/restart.md).
            dropped = self._sock is sock and self._may_retry(e)
            with self._cond:
                self._reader_error = e
                self._reconnecting = dropped
                self._cond.notify_all()
        else:
            dropped = False
        finally:
            with self._cond:
                if self._reader is threading.current_thread():
                    self._reader = None
                self._cond.notify_all()
        if dropped:
            self._reader_reconnect()

    def _reader_reconnect(self) -> None:
        """After the reader's connection dropped: opens a new one within ``reconnect_window`` (which asks
        for the pushes again and starts a new reader), unless the client was disconnected meanwhile or
        another thread's call reconnected first. After the window, the next call raises."""
        try:
            self._reconnect_reader()
        finally:
            with self._cond:
                self._reconnecting = False
                self._cond.notify_all()

    def _reconnect_reader(self) -> None:
        since, attempt = time.monotonic(), 0
        while True:
            with self._lock:
                if self._stopped or (self._sock is not None and self._reader_error is None):
                    return  # closed by the program, or reconnected by another thread's call
                self._disconnect()  # the dead socket (or a new one that died while being restored)
                self._outage = True
                try:
                    self._connect()
                    return
                except ConnectionClosedError:
                    attempt += 1
            left = since + self.reconnect_window - time.monotonic()
            if left <= 0:
                return
            _backoff(attempt, left)

    # ------------------------------------------------------------------ core

    def echo(self, message: str | bytes) -> str | bytes:
        """NOOP: the kernel echoes the payload byte for byte (str in, str out; bytes in, bytes out)."""
        reply = self.call(SyscallOp.SYS_NOOP, message)
        return reply.payload if isinstance(message, (bytes, bytearray, memoryview)) else reply.payload_str

    noop = echo

    def hello(self, *, check: bool | None = None) -> dict:
        """HELLO: protocol_version, kernel_version, agent_id, role, name, features. Remembers
        ``agent_id``, ``role`` and ``name`` on the client."""
        reply = self.call_json(SyscallOp.SYS_HELLO, {}, check=check)
        if isinstance(reply, dict) and reply.get("success") is not False:
            self._hello_said = True
            self.hello_info = reply
            if isinstance(reply.get("agent_id"), int):
                self._agent_id = reply["agent_id"]
            self.role = reply.get("role", self.role)
            self.name = reply.get("name", self.name)
        return reply

    def heartbeat(self, *, check: bool | None = None) -> dict:
        """HEARTBEAT (ext): resets this agent's watchdog deadline."""
        return self.call_json(SyscallOp.SYS_HEARTBEAT, {}, check=check)

    def exit(self) -> bool:
        """EXIT: says goodbye, then closes the connection. True if the kernel answered."""
        try:
            with self._lock:
                if self._sock is None:
                    return False
                self.call(SyscallOp.SYS_EXIT, b"")
                return True
        except (ConnectionClosedError, TimeoutError):
            return False
        finally:
            self.disconnect()

    # ------------------------------------------------------------------ agent lifecycle

    def spawn(
        self,
        name: str | None,
        script: str | None = None,
        sandboxed: bool = True,
        network: bool = False,
        limits: dict | None = None,
        restart_policy: str = "never",
        max_restarts: int = 5,
        restart_window: int = 300,
        *,
        command: list[str] | None = None,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        backoff_initial_ms: int | None = None,
        backoff_multiplier: float | None = None,
        backoff_max_ms: int | None = None,
        min_uptime_ms: int | None = None,
        watchdog_ms: int | None = None,
        permissions: dict | str | None = None,
        quotas: dict | None = None,
        budgets: dict | None = None,
        node: str | None = None,
        world: str | None = None,
        durable: bool | None = None,
        standby: int | None = None,
        spare: bool | None = None,
        check: bool | None = None,
    ) -> dict:
        """SPAWN an agent. Returns the reply: ``success, id, name, pid, status, restart_policy,
        isolation``. ``name`` None lets the kernel pick ``agent_<id>``. Keyword-only arguments are Clove
        extensions (docs/protocol.md §5); those left at None are not sent (kernel defaults apply). ``node``
        runs it on that node of the cluster (operators; docs/cluster.md "Operators"); ``durable=True`` journals
        its THINK, HTTP and EXEC results so that they replay after a crash (docs/durable.md); ``standby=1`` keeps a
        warm standby and ``spare=False`` turns off the spare sandbox (docs/supervision.md)."""
        payload: dict[str, Any] = {
            "sandboxed": sandboxed,
            "network": network,
            "restart_policy": restart_policy,
            "max_restarts": max_restarts,
            "restart_window": restart_window,
        }
        if name is not None:
            payload["name"] = name
        if script is not None:
            payload["script"] = script
        extras = {
            "limits": limits,
            "command": command,
            "args": args,
            "env": env,
            "cwd": cwd,
            "backoff_initial_ms": backoff_initial_ms,
            "backoff_multiplier": backoff_multiplier,
            "backoff_max_ms": backoff_max_ms,
            "min_uptime_ms": min_uptime_ms,
            "watchdog_ms": watchdog_ms,
            "permissions": permissions,
            "quotas": quotas,
            "budgets": budgets,
            "node": node,
            "world": world,
            "durable": durable,
            "standby": standby,
            "spare": spare,
        }
        payload.update({k: v for k, v in extras.items() if v is not None})
        if "script" not in payload and "command" not in payload:
            raise ValueError("spawn needs a script or a command")
        return self.call_json(SyscallOp.SYS_SPAWN, payload, check=check)

    @staticmethod
    def _target(name: str | int | None, agent_id: int | None) -> dict:
        # kill(3) / kill(agent_id=3) / kill("worker") / kill(name="worker"); id 0 is a valid id here
        if isinstance(name, int) and not isinstance(name, bool) and agent_id is None:
            name, agent_id = None, name
        if name:
            return {"name": name}
        if agent_id is not None:
            return {"id": int(agent_id)}
        raise ValueError("give an agent id or a name")

    def _lifecycle(self, op: int, flag: str, name: Any, agent_id: Any, check: bool | None, **extra: Any) -> bool:
        payload = self._target(name, agent_id)
        payload.update({k: v for k, v in extra.items() if v is not None})
        reply = self.call_json(op, payload, check=check)
        self.last_reply = reply
        return bool(isinstance(reply, dict) and reply.get(flag, reply.get("success", False)) and not _is_error(reply))

    def kill(
        self,
        name: str | int | None = None,
        agent_id: int | None = None,
        *,
        grace_ms: int | None = None,
        check: bool | None = None,
    ) -> bool:
        """KILL an agent by name or id (SIGTERM, then SIGKILL after ``grace_ms``). True if killed; the
        whole reply is in ``client.last_reply``."""
        return self._lifecycle(SyscallOp.SYS_KILL, "killed", name, agent_id, check, grace_ms=grace_ms)

    def restart(
        self,
        name: str | int | None = None,
        agent_id: int | None = None,
        *,
        grace_ms: int | None = None,
        check: bool | None = None,
    ) -> bool:
        """RESTART an agent by name or id: stopped like KILL, then started again at once whatever its restart
        policy. True if restarted; its new pid is ``client.last_reply["pid"]``."""
        return self._lifecycle(SyscallOp.SYS_RESTART, "restarted", name, agent_id, check, grace_ms=grace_ms)

    def pause(self, name: str | int | None = None, agent_id: int | None = None, *, check: bool | None = None) -> bool:
        """PAUSE an agent (SIGSTOP to its process group). True on success."""
        return self._lifecycle(SyscallOp.SYS_PAUSE, "paused", name, agent_id, check)

    def resume(self, name: str | int | None = None, agent_id: int | None = None, *, check: bool | None = None) -> bool:
        """RESUME a paused agent (SIGCONT). True on success."""
        return self._lifecycle(SyscallOp.SYS_RESUME, "resumed", name, agent_id, check)

    def list_agents(self, *, all_nodes: bool = False, check: bool | None = None) -> list:
        """LIST: the agents, as a list of ``{id, name, pid, state, running, restarts, uptime_ms, …}``;
        ``all_nodes=True`` on a clustered kernel (operators) adds every other node's agents (with ``node``)."""
        reply = self.call_json(SyscallOp.SYS_LIST, {"all_nodes": True} if all_nodes else {}, check=check)
        if isinstance(reply, list):
            return reply
        if isinstance(reply, dict) and isinstance(reply.get("agents"), list):
            return reply["agents"]
        return []

    # ------------------------------------------------------------------ IPC

    def register_name(self, name: str, *, check: bool | None = None) -> dict:
        """REGISTER an extra name for this connection: ``success, agent_id, name``."""
        reply = self.call_json(SyscallOp.SYS_REGISTER, {"name": name}, check=check)
        if isinstance(reply, dict) and reply.get("success") and name not in self._names:
            self._names.append(name)
        return reply

    register = register_name

    def send_message(
        self, message: Any, to: int | str | None = None, to_name: str | None = None, *, check: bool | None = None
    ) -> dict:
        """SEND ``message`` (any JSON) to an id (``to``) or a name (``to_name``, or a str ``to``):
        ``success, delivered_to``."""
        payload: dict[str, Any] = {}
        if isinstance(to, str):
            to, to_name = None, to
        if to is not None:
            payload["to"] = to
        if to_name is not None:
            payload["to_name"] = to_name
        payload["message"] = message
        if isinstance(message, EncodedMessage):
            return self._call_text(SyscallOp.SYS_SEND, _item_json(payload), check)
        return self.call_json(SyscallOp.SYS_SEND, payload, check=check)

    def send_batch(
        self, items: Iterable[Mapping[str, Any]], *, results: str = "all", check: bool | None = None
    ) -> dict:
        """SEND_BATCH (ext): many messages in one request (1 to 4096 items). Each item is a dict with
        ``to`` (an id; a str is a name) or ``to_name``, and ``message`` (any JSON; default ``{}``). Items are
        independent: the reply is ``success, delivered_count, failed_count, results``, with per item, in
        order, ``{"delivered_to": id}`` or the ``{"error", "code"}`` SEND would have given; with
        ``results="refused"`` only the refused items, each with its ``index`` (for senders at high rates).
        Only a request of the wrong shape (no items, more than 4096, an item that is not a dict) fails as a
        whole.

        ``results="none"``: the kernel does not answer a batch whose every item was queued (the sender is
        not woken for it). The call returns ``{"ref": n}`` as soon as the frame is written, ``n`` numbering
        this client's quiet batches from 1; whatever the kernel refused of it (some items, or the whole
        request) comes later as a SEND_REFUSED with that ``ref``, to :meth:`on_refused` callbacks or
        :meth:`next_refusal`. Such a batch is not sent again on a new connection: written just before the
        connection dropped, it may or may not have been queued (a failed write raises, as calls do)."""
        messages = []
        for item in items:
            if not isinstance(item, Mapping):
                raise TypeError(f"send_batch items are dicts with to/to_name/message, not {type(item).__name__}")
            m: dict[str, Any] = {}
            to, to_name = item.get("to"), item.get("to_name")
            if isinstance(to, str):
                to, to_name = None, to
            if to is not None:
                m["to"] = to
            if to_name is not None:
                m["to_name"] = to_name
            if "message" in item:
                m["message"] = item["message"]
            messages.append(m)
        if any(isinstance(m.get("message"), EncodedMessage) for m in messages):
            heads: dict[tuple[Any, Any], str] = {}
            head = '{"messages":[' + ",".join(_item_json(m, heads) for m in messages) + "]"
        else:
            head = json.dumps({"messages": messages}, separators=(",", ":"))[:-1]
        if results == "none":
            with self._lock:  # refs in the order the batches are written
                self._batch_refs += 1
                ref = self._batch_refs
                self._post(SyscallOp.SYS_SEND_BATCH, head + ',"results":"none","ref":%d}' % ref)
            return {"ref": ref}
        if results != "all":
            head += ',"results":' + json.dumps(results)
        return self._call_text(SyscallOp.SYS_SEND_BATCH, head + "}", check)

    # A request that is not answered when it succeeds (send_batch results="none") is written once: a reply
    # that does not come cannot tell whether the kernel took it, so it is never sent again on a new
    # connection. Only a connection that is not open yet (a kernel restart) is waited for, as calls do.
    def _post(self, opcode: int, body: str) -> None:
        """Writes one request that nothing waits to be answered."""
        with self._lock:
            if self._sock is None and not self._steps:
                try:
                    self._connect()
                except ConnectionClosedError as e:
                    if not self._may_retry(e):
                        raise
                    self._reconnect_after(e)
            self.send(opcode, body)

    def on_refused(self, fn: Callable[[dict], Any]) -> Callable[[], None]:
        """Calls ``fn(refusal)`` with each SEND_REFUSED: what the kernel refused of a
        ``send_batch(…, results="none")``, ``{"ref", "success": True, "delivered_count", "failed_count",
        "results": [{"index", "error", "code"}, …]}`` (items refused) or ``{"ref", "success": False,
        "error", "code"}`` (the whole request; nothing was queued), ``ref`` being what that call returned.
        Refusals that came while no callback was registered are kept (the last 1024; a warning says when
        older ones are dropped) and given, in order, to the first callback registered (at once, on the
        registering thread). Returns a function that unregisters ``fn``.

        As :meth:`on_message`, it starts a reader thread, so that refusals reach ``fn`` without the program
        making a call; calls keep working from other threads. ``fn`` runs on the reader (or on a call's
        thread, while that call reads its reply): keep it short, and make no calls on this client from it.
        An exception it raises is reported as a ``RuntimeWarning`` and the others still run."""
        with self._refusal_lock:  # kept refusals reach fn before any that comes next
            with self._cond:
                self._refused_fns.append(fn)
                held = list(self._refusals)
                self._refusals.clear()
            for refusal in held:
                _call_refused(fn, refusal)
        if self._reader is not threading.current_thread():  # from a callback on the reader: it reads
            with self._lock:
                if self._sock is not None and self._refused_fns:
                    self._start_reader()

        def off() -> None:
            with self._cond:
                if fn in self._refused_fns:
                    self._refused_fns.remove(fn)

        return off

    # The client reads only while a call waits for its reply, unless a reader thread runs: a program that
    # only sends quiet batches would never see a refusal. This waits for one, reading the socket itself
    # when nothing else does; what it reads meanwhile goes where it always goes (pushes to their queues).
    def next_refusal(self, timeout: float | None = None) -> dict | None:
        """The next SEND_REFUSED (as :meth:`on_refused` describes it): one kept, else the next to arrive,
        waiting up to ``timeout`` seconds (None: for ever). Returns None at the timeout, or when the client
        is not connected (refusals only come on the connection that sent the batch). Refusals go to the
        :meth:`on_refused` callbacks while there is one, and then none to this. Without a reader thread it
        reads the socket itself, holding the client's lock while it waits (as :meth:`messages`)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._cond:
                if self._refusals:
                    return self._refusals.popleft()
            if self._reader is not None or self._reconnecting:
                with self._cond:
                    while not self._refusals and (
                        self._reconnecting or (self._sock is not None and self._reader_error is None)
                    ):
                        left = None if deadline is None else deadline - time.monotonic()
                        if left is not None and left <= 0:
                            return None
                        self._cond.wait(left)
                    if not self._refusals:
                        return None
                continue
            with self._lock:
                if self._refusals or self._reader is not None:
                    continue
                if self._sock is None:
                    return None
                try:
                    if not self._read_some(deadline, idle_ok=True):
                        return None
                except ConnectionClosedError as e:
                    if not self._may_retry(e):
                        raise
                    self._reconnect_after(e)

    def _tell_refused(self, refusal: dict) -> None:
        """Hands a SEND_REFUSED payload to the on_refused() callbacks, or keeps it."""
        with self._refusal_lock:
            warn = False
            with self._cond:
                fns = list(self._refused_fns)
                if not fns:
                    self._refusals.append(refusal)
                    if len(self._refusals) > _REFUSALS_KEPT:
                        self._refusals.popleft()
                        warn, self._refusals_dropped = not self._refusals_dropped, True  # said once per client
                    self._cond.notify_all()
            for fn in fns:
                _call_refused(fn, refusal)
        if warn:
            import warnings

            warnings.warn(
                f"more than {_REFUSALS_KEPT} SEND_REFUSED frames came with no on_refused() callback: the oldest "
                "are dropped",
                RuntimeWarning,
                stacklevel=2,
            )

    def recv_messages(
        self, max_messages: int = 10, timeout: float | None = None, *, check: bool | None = None
    ) -> dict:
        """RECV up to ``max_messages``: ``success, messages:[{from, from_name, message, age_ms, seq}],
        count``. With ``timeout`` (seconds, > 0) the kernel holds the reply until a message arrives or the
        timeout passes (one request, no polling)."""
        return self._take(SyscallOp.SYS_RECV, max_messages, timeout, check)

    def _take(self, op: int, max_items: int, timeout: float | None, check: bool | None) -> dict:
        """RECV / POLL_EVENTS: with ``timeout`` (seconds, > 0) the kernel holds the reply (no polling)."""
        payload: dict[str, Any] = {"max": max_items}
        wait = 0.0
        if timeout is not None and timeout > 0:
            payload["wait"] = True
            payload["timeout_ms"] = _ms(timeout)
            wait = timeout
        return self.call_json(op, payload, check=check, wait=wait)

    def _take_one(self, op: int, key: str, timeout: float | None, check: bool | None) -> dict | None:
        """One item of ``reply[key]``, waited for in the kernel; ``timeout=None`` waits in 30 s steps."""
        while True:
            step = _WAIT_STEP_S if timeout is None else timeout
            reply = self._take(op, 1, step if step > 0 else None, check)
            items = reply.get(key) if isinstance(reply, dict) else None
            if items:
                return items[0]
            if timeout is not None or _is_error(reply):
                return None

    def wait_message(self, timeout: float | None = 30.0, *, check: bool | None = None) -> dict | None:
        """Waits (in the kernel) for one message and returns it (``{from, from_name, message, …}``), or
        None when ``timeout`` seconds pass. ``timeout=None`` waits for ever (in 30 s kernel-side steps)."""
        return self._take_one(SyscallOp.SYS_RECV, "messages", timeout, check)

    def broadcast(self, message: Any, include_self: bool = False, *, check: bool | None = None) -> dict:
        """BROADCAST to every named agent: ``success, delivered_count, failed_count``."""
        return self.call_json(
            SyscallOp.SYS_BROADCAST, {"message": message, "include_self": include_self}, check=check
        )

    # ------------------------------------------------------------------ state store

    def store(
        self, key: str, value: Any, scope: str = "global", ttl: int | float | None = None, *, check: bool | None = None
    ) -> dict:
        """STORE ``value`` under ``key`` in scope ``global``/``agent``/``session``; ``ttl`` in seconds."""
        payload: dict[str, Any] = {"key": key, "value": value, "scope": scope}
        if ttl is not None:
            payload["ttl"] = ttl
        return self.call_json(SyscallOp.SYS_STORE, payload, check=check)

    def fetch(self, key: str, scope: str | None = None, *, check: bool | None = None) -> dict:
        """FETCH: ``success, exists, value, scope``. Without ``scope`` the kernel looks in agent scope
        first, then global/session."""
        payload: dict[str, Any] = {"key": key}
        if scope is not None:
            payload["scope"] = scope
        return self.call_json(SyscallOp.SYS_FETCH, payload, check=check)

    def delete_key(self, key: str, scope: str | None = None, *, check: bool | None = None) -> dict:
        """DELETE: ``success, deleted``."""
        payload: dict[str, Any] = {"key": key}
        if scope is not None:
            payload["scope"] = scope
        return self.call_json(SyscallOp.SYS_DELETE, payload, check=check)

    def list_keys(self, prefix: str = "", *, check: bool | None = None) -> dict:
        """KEYS visible to the caller: ``success, keys, count``."""
        return self.call_json(SyscallOp.SYS_KEYS, {"prefix": prefix} if prefix else {}, check=check)

    # ------------------------------------------------------------------ tasks

    def task_create(
        self, description: str, subtasks: list[Any] | None = None, *, check: bool | None = None, **opts: Any
    ) -> dict:
        """TASK_CREATE: ``success, id, task``. ``subtasks``: descriptions or ``{description, payload}``
        dicts (created pending); ``opts``: ``deadline_ms``, ``policy`` (``on_failure``, ``max_attempts``,
        ``subtask_timeout_ms``, ``reassign_wait_ms``), ``pool`` (a glob of agent names), ``metadata``."""
        payload: dict[str, Any] = {"description": description, **{k: v for k, v in opts.items() if v is not None}}
        if subtasks is not None:
            payload["subtasks"] = [{"description": s} if isinstance(s, str) else s for s in subtasks]
        return self.call_json(SyscallOp.SYS_TASK_CREATE, payload, check=check)

    def task_assign(
        self,
        task_id: int,
        agent_id: int | None = None,
        subtask: str | None = None,
        agent_name: str | None = None,
        payload: Any = None,
        subtask_id: int | None = None,
        deadline_ms: int | None = None,
        *,
        check: bool | None = None,
    ) -> dict:
        """TASK_ASSIGN a new ``subtask`` (or pending ``subtask_id``) to ``agent_id``/``agent_name``, or,
        naming neither, to the least loaded live agent of the task's pool: ``success, subtask_id,
        agent_id, agent_name``. The assignee gets a ``task_assigned`` message."""
        req = _given(
            task_id=task_id,
            agent_id=agent_id,
            agent_name=agent_name,
            subtask=subtask,
            subtask_id=subtask_id,
            payload=payload,
            deadline_ms=deadline_ms,
        )
        return self.call_json(SyscallOp.SYS_TASK_ASSIGN, req, check=check)

    def task_status(self, task_id: int, *, check: bool | None = None) -> dict:
        """TASK_STATUS: ``success, task, status, results`` (the task with its subtasks)."""
        return self.call_json(SyscallOp.SYS_TASK_STATUS, {"task_id": task_id}, check=check)

    def task_complete(
        self,
        task_id: int,
        result: Any = None,
        subtask_id: int | None = None,
        error: str | None = None,
        *,
        check: bool | None = None,
    ) -> dict:
        """TASK_COMPLETE the caller's open subtask of ``task_id`` (or ``subtask_id``) with ``result``;
        ``error`` fails it instead (the task's policy reassigns or fails it): ``success, task_status``."""
        req = _given(task_id=task_id, result=result, subtask_id=subtask_id, error=error)
        return self.call_json(SyscallOp.SYS_TASK_COMPLETE, req, check=check)

    def task_list(
        self, status: str | None = None, mine: bool = False, limit: int | None = None, *, check: bool | None = None
    ) -> dict:
        """TASK_LIST: ``success, tasks, count`` — tasks the caller created or holds a subtask of
        (operators: all, unless ``mine``)."""
        req = _given(status=status, mine=True if mine else None, limit=limit)
        return self.call_json(SyscallOp.SYS_TASK_LIST, req, check=check)

    # ------------------------------------------------------------------ events

    def subscribe(self, event_types: list[str] | str, *, check: bool | None = None) -> dict:
        """SUBSCRIBE to event types (e.g. ``["AGENT_SPAWNED", "AGENT_EXITED"]``)."""
        if isinstance(event_types, str):
            event_types = [event_types]
        reply = self.call_json(SyscallOp.SYS_SUBSCRIBE, {"event_types": list(event_types)}, check=check)
        if isinstance(reply, dict) and reply.get("success"):
            self._topics.update(event_types)
        return reply

    def unsubscribe(
        self, event_types: list[str] | str | None = None, all: bool = False, *, check: bool | None = None  # noqa: A002
    ) -> dict:
        """UNSUBSCRIBE from some event types, or from everything with ``all=True``."""
        payload: dict[str, Any] = {}
        if all:
            payload["all"] = True
        if event_types is not None:
            payload["event_types"] = [event_types] if isinstance(event_types, str) else list(event_types)
        if not payload:
            raise ValueError("give event_types or all=True")
        if all:
            self._topics.clear()
        else:
            self._topics.difference_update(payload["event_types"])
        return self.call_json(SyscallOp.SYS_UNSUBSCRIBE, payload, check=check)

    def poll_events(
        self, max_events: int = 100, timeout: float | None = None, *, check: bool | None = None
    ) -> dict:
        """POLL_EVENTS: ``success, events:[{type, data, source_agent_id, timestamp}], count, dropped``.
        With ``timeout`` (seconds, > 0) the kernel holds the reply until an event arrives."""
        return self._take(SyscallOp.SYS_POLL_EVENTS, max_events, timeout, check)

    def wait_event(self, timeout: float | None = 30.0, *, check: bool | None = None) -> dict | None:
        """Waits (in the kernel) for one event and returns it, or None after ``timeout`` seconds."""
        return self._take_one(SyscallOp.SYS_POLL_EVENTS, "events", timeout, check)

    def emit_event(self, event_type: str, data: Any = None, *, check: bool | None = None) -> dict:
        """EMIT a custom event (sent as ``event``, which the kernel reads — the public SDK sent
        ``event_type`` and its events always came out as plain CUSTOM)."""
        return self.call_json(SyscallOp.SYS_EMIT, {"event": event_type, "data": {} if data is None else data}, check=check)

    # ------------------------------------------------------------------ permissions

    def get_permissions(self, agent_id: int | None = None, *, check: bool | None = None) -> dict:
        """GET_PERMS: ``success, agent_id, permissions{…}`` of the caller, or of an agent it controls."""
        return self.call_json(SyscallOp.SYS_GET_PERMS, {} if agent_id is None else {"agent_id": agent_id}, check=check)

    def set_permissions(
        self,
        permissions: dict | None = None,
        level: str | None = None,
        agent_id: int | None = None,
        *,
        check: bool | None = None,
    ) -> dict:
        """SET_PERMS of ``agent_id`` (operators, or a parent on its children within its own rights)."""
        payload = _given(permissions=permissions, level=level, agent_id=agent_id)
        return self.call_json(SyscallOp.SYS_SET_PERMS, payload, check=check)

    # ------------------------------------------------------------------ acting on the world (THINK, EXEC,
    # READ/WRITE, HTTP, async results), audit, record/replay, metrics, the tunnel (operators only);
    # worlds answer not_supported (kept so existing code keeps running)

    @staticmethod
    def _think_request(
        prompt: str | None,
        image: bytes | None,
        image_mime_type: str,
        **fields: Any,
    ) -> dict:
        """A THINK / THINK_STREAM request of the fields that were given (None: left out)."""
        payload = _given(prompt=prompt, **fields)
        if image:
            import base64  # only here: not worth its import on every agent start

            payload["image"] = {"data": base64.b64encode(image).decode(), "mime_type": image_mime_type}
        return payload

    def think(
        self,
        prompt: str | None = None,
        image: bytes | None = None,
        image_mime_type: str = "image/jpeg",
        system_instruction: str | None = None,
        thinking_level: str | None = None,
        temperature: float | None = None,
        model: str | None = None,
        *,
        max_tokens: int | None = None,
        messages: list | None = None,
        tools: list | None = None,
        tool_choice: str | dict | None = None,
        provider: str | None = None,
        check: bool | None = None,
    ) -> dict:
        """THINK: the kernel calls the operator's LLM provider for this agent (its keys never reach the
        agent) and replies ``success, content, tokens`` (+ ``input_tokens, output_tokens, provider, model,
        finish_reason``, and ``tool_calls`` ``[{id, name, arguments}]`` when the model called ``tools``).
        Tokens come from the provider and count against the agent's quota. The public SDK ran the model
        locally and sent LLM_REPORT instead.

        ``messages`` are the earlier turns, oldest first (``prompt`` may then be left out):
        ``{"role": "system"|"user"|"assistant"|"tool", "content": str}``; an assistant turn that called
        tools carries the reply's ``tool_calls``, and each result is a ``tool`` turn with the call's id as
        ``tool_call_id``. ``tool_choice``: ``"auto"``, ``"none"``, ``"required"`` or ``{"name": tool}``."""
        payload = self._think_request(
            prompt,
            image,
            image_mime_type,
            system_instruction=system_instruction,
            thinking_level=thinking_level,
            temperature=temperature,
            model=model,
            max_tokens=max_tokens,
            messages=messages,
            tools=tools,
            tool_choice=tool_choice,
            provider=provider,
        )
        payload["async"] = False
        return self.call_json(SyscallOp.SYS_THINK, payload, check=check)

    def think_stream(
        self,
        prompt: str | None = None,
        image: bytes | None = None,
        image_mime_type: str = "image/jpeg",
        system_instruction: str | None = None,
        thinking_level: str | None = None,
        temperature: float | None = None,
        model: str | None = None,
        *,
        max_tokens: int | None = None,
        messages: list | None = None,
        tools: list | None = None,
        tool_choice: str | dict | None = None,
        provider: str | None = None,
        wait: float = 5.0,
        check: bool | None = None,
    ) -> ThinkStream:
        """THINK_STREAM (ext): THINK's call (same arguments), its answer streamed. Returns a
        :class:`ThinkStream`: iterate it for the pieces (``{"content": str}`` or ``{"tool_call": {index,
        id?, name?, arguments?}}``); once it is exhausted, ``.result`` is THINK's reply (or, unless
        strict, the error reply that ended it). The call is admitted now: in strict mode a refusal raises
        here. Each THINK_STREAM_NEXT waits up to ``wait`` seconds in the kernel, on this connection."""
        payload = self._think_request(
            prompt,
            image,
            image_mime_type,
            system_instruction=system_instruction,
            thinking_level=thinking_level,
            temperature=temperature,
            model=model,
            max_tokens=max_tokens,
            messages=messages,
            tools=tools,
            tool_choice=tool_choice,
            provider=provider,
        )
        reply = self.call_json(SyscallOp.SYS_THINK_STREAM, payload, check=check)
        return ThinkStream(self, reply, wait, check)

    def think_stream_next(
        self, stream_id: int, wait: float | None = None, *, check: bool | None = None
    ) -> dict:
        """THINK_STREAM_NEXT (ext): ``success, deltas, done`` (+ ``result``, THINK's reply, when done): the
        pieces buffered since the last call, waiting up to ``wait`` seconds (default 30) for one."""
        payload: dict[str, Any] = {"stream_id": stream_id}
        if wait is not None:
            payload["wait_ms"] = _ms(wait)
        return self.call_json(
            SyscallOp.SYS_THINK_STREAM_NEXT, payload, check=check, wait=30.0 if wait is None else wait
        )

    def think_stream_cancel(self, stream_id: int, *, check: bool | None = None) -> dict:
        """THINK_STREAM_CANCEL (ext): ends the stream; its provider call is aborted if still going
        (``cancelled`` says whether it was)."""
        return self.call_json(SyscallOp.SYS_THINK_STREAM_CANCEL, {"stream_id": stream_id}, check=check)

    def llm_report(self, tokens: int, success: bool = True) -> dict:
        """Reports the tokens a client-side LLM call used, for quota accounting."""
        return self.call_json(SyscallOp.SYS_LLM_REPORT, {"tokens": tokens, "success": success})

    def exec(self, command: str, cwd: str | None = None, timeout: int = 30, *, check: bool | None = None) -> dict:
        payload: dict[str, Any] = {"command": command, "timeout": timeout, "async": False}
        if cwd:
            payload["cwd"] = cwd
        return self.call_json(SyscallOp.SYS_EXEC, payload, check=check)

    def read_file(self, path: str, *, check: bool | None = None) -> dict:
        return self.call_json(SyscallOp.SYS_READ, {"path": path}, check=check)

    def write_file(self, path: str, content: str, mode: str = "write", *, check: bool | None = None) -> dict:
        return self.call_json(SyscallOp.SYS_WRITE, {"path": path, "content": content, "mode": mode}, check=check)

    def read(self, path: str) -> str:
        result = self.read_file(path)
        if result.get("success"):
            return result.get("content", "")
        raise IOError(result.get("error", "Read failed"))

    def write(self, path: str, content: str, mode: str = "write") -> dict:
        return self.write_file(path, content, mode)

    def http(
        self,
        url: str,
        method: str = "GET",
        headers: dict | None = None,
        body: str | None = None,
        timeout: int = 30,
        *,
        check: bool | None = None,
    ) -> dict:
        payload: dict[str, Any] = {"url": url, "method": method, "timeout": timeout, "async": False}
        if headers:
            payload["headers"] = headers
        if body:
            payload["body"] = body
        return self.call_json(SyscallOp.SYS_HTTP, payload, check=check)

    def async_results(self, max_results: int = 10, timeout: float | None = None, *, check: bool | None = None) -> dict:
        """ASYNC_RESULTS (ext): ``success, results:[{request_id, opcode, opcode_name, payload, result}], count,
        pending`` — the replies of calls made with ``async=True``. With ``timeout`` (seconds, > 0) the kernel
        holds the reply until a result is ready."""
        return self._take(SyscallOp.SYS_ASYNC_RESULTS, max_results, timeout, check)

    def async_poll(self, max_results: int = 10) -> dict:
        """Takes up to ``max_results`` finished async results."""
        return self.call_json(SyscallOp.SYS_ASYNC_POLL, {"max": max_results})

    def get_audit_log(
        self, category: str | None = None, agent_id: int | None = None, since_id: int = 0, limit: int = 100
    ) -> dict:
        payload: dict[str, Any] = {"limit": limit, "since_id": since_id}
        if category:
            payload["category"] = category
        if agent_id is not None:
            payload["agent_id"] = agent_id
        return self.call_json(SyscallOp.SYS_GET_AUDIT_LOG, payload)

    def set_audit_config(self, **kwargs: Any) -> dict:
        return self.call_json(SyscallOp.SYS_SET_AUDIT_CONFIG, kwargs)

    def start_recording(
        self,
        include_think: bool = False,
        include_http: bool = False,
        include_exec: bool = False,
        filter_agents: list | None = None,
        max_entries: int = 50000,
    ) -> dict:
        payload: dict[str, Any] = {
            "include_think": include_think,
            "include_http": include_http,
            "include_exec": include_exec,
            "max_entries": max_entries,
        }
        if filter_agents:
            payload["filter_agents"] = filter_agents
        return self.call_json(SyscallOp.SYS_RECORD_START, payload)

    def stop_recording(self) -> dict:
        return self.call_json(SyscallOp.SYS_RECORD_STOP, {})

    def get_recording_status(self, export: bool = False) -> dict:
        return self.call_json(SyscallOp.SYS_RECORD_STATUS, {"export": export})

    def start_replay(self, recording_data: str) -> dict:
        # the kernel reads `recording_data` (the public SDK sent `recording`)
        return self.call_json(SyscallOp.SYS_REPLAY_START, {"recording_data": recording_data})

    def get_replay_status(self) -> dict:
        return self.call_json(SyscallOp.SYS_REPLAY_STATUS, {})

    def get_system_metrics(self) -> dict:
        return self.call_json(SyscallOp.SYS_METRICS_SYSTEM, {})

    def get_agent_metrics(self, agent_id: int | None = None) -> dict:
        return self.call_json(SyscallOp.SYS_METRICS_AGENT, {} if agent_id is None else {"agent_id": agent_id})

    def get_all_agent_metrics(self) -> dict:
        return self.call_json(SyscallOp.SYS_METRICS_ALL_AGENTS, {})

    def get_cgroup_metrics(self, cgroup_path: str | None = None) -> dict:
        return self.call_json(SyscallOp.SYS_METRICS_CGROUP, {"cgroup_path": cgroup_path} if cgroup_path else {})

    # ------------------------------------------------------------------ quotas (docs/protocol.md "Quotas")

    def set_quota(
        self,
        quotas: dict,
        agent_id: int | None = None,
        name: str | None = None,
        service: dict | None = None,
    ) -> dict:
        """SET_QUOTA: ``quotas`` is ``{name: {"limit": n, "policy": "deny"|"pause"|"kill"} | None}``
        (None removes one) for an agent (``agent_id`` or ``name``) or a service (``{"project", "service"}``)."""
        payload = _given(quotas=quotas, agent_id=agent_id, name=name, service=service)
        return self.call_json(SyscallOp.SYS_SET_QUOTA, payload)

    def get_quota(
        self,
        agent_id: int | None = None,
        name: str | None = None,
        service: dict | None = None,
        all: bool = False,  # noqa: A002 - the wire's name
    ) -> dict:
        """GET_QUOTA: an agent's (default: the caller's) or a service's quotas and usage; ``all=True``
        (operators) every agent's and service's."""
        payload = _given(agent_id=agent_id, name=name, service=service, all=True if all else None)
        return self.call_json(SyscallOp.SYS_GET_QUOTA, payload)

    def mcp_list_tools(self, server: str | None = None, *, check: bool | None = None) -> dict:
        """MCP_LIST_TOOLS (ext): ``tools`` (each ``server, name, description, input_schema``) of the operator's
        MCP servers that this caller may call (its ``permissions.mcp``), and ``servers`` with their state;
        ``server`` limits it to one server. See docs/mcp.md."""
        return self.call_json(SyscallOp.SYS_MCP_LIST_TOOLS, _given(server=server), check=check)

    def mcp_call(
        self,
        server: str,
        tool: str,
        arguments: dict | None = None,
        timeout_ms: int | None = None,
        *,
        check: bool | None = None,
    ) -> dict:
        """MCP_CALL (ext): calls ``tool`` of the operator's MCP server ``server`` through the kernel; the reply
        is the tool's result: ``content`` (MCP content blocks), ``structured_content``, ``is_error``."""
        payload = _given(server=server, tool=tool, arguments=arguments or {}, timeout_ms=timeout_ms)
        return self.call_json(SyscallOp.SYS_MCP_CALL, payload, check=check)

    def cluster_nodes(self) -> dict:
        """CLUSTER_NODES: ``{clustered, nodes}`` (each node with ``alive`` and ``self``); no nodes without --cluster."""
        return self.call_json(SyscallOp.SYS_CLUSTER_NODES, {})

    def cluster_status(self) -> dict:
        """CLUSTER_STATUS: ``{clustered, node, …}``: this kernel's membership (``node`` None without --cluster)."""
        return self.call_json(SyscallOp.SYS_CLUSTER_STATUS, {})

    def world_create(self, name: str, config: dict | None = None, *, check: bool | None = None) -> dict:
        """WORLD_CREATE: a world from its config (docs/worlds.md): ``world_id, name, seed``."""
        return self.call_json(SyscallOp.SYS_WORLD_CREATE, {"name": name, "config": config or {}}, check=check)

    def world_destroy(self, world_id: str, force: bool = False, *, check: bool | None = None) -> dict:
        """WORLD_DESTROY (operators or the world's creator); ``force`` also when it has members."""
        return self.call_json(SyscallOp.SYS_WORLD_DESTROY, {"world_id": world_id, "force": force}, check=check)

    def world_list(self) -> dict:
        """WORLD_LIST: ``worlds, count``."""
        return self.call_json(SyscallOp.SYS_WORLD_LIST, {})

    def world_join(self, world_id: str, agent_id: int | None = None, *, check: bool | None = None) -> dict:
        """WORLD_JOIN: the caller (or, for operators, ``agent_id``) is in the world from now on."""
        return self.call_json(SyscallOp.SYS_WORLD_JOIN, _given(world_id=world_id, agent_id=agent_id), check=check)

    def world_leave(self, agent_id: int | None = None, *, check: bool | None = None) -> dict:
        """WORLD_LEAVE: the caller (or, for operators, ``agent_id``) leaves its world."""
        return self.call_json(SyscallOp.SYS_WORLD_LEAVE, _given(agent_id=agent_id), check=check)

    def world_event(
        self,
        world_id: str,
        event_type: str,
        params: dict | None = None,
        clear: bool = False,
        *,
        check: bool | None = None,
    ) -> dict:
        """WORLD_EVENT: inject a chaos event (operators or the creator); ``clear=True`` removes events of that
        type (``event_type="clear"``: all)."""
        payload = {"world_id": world_id, "event_type": event_type, "params": params or {}}
        if clear:
            payload["clear"] = True
        return self.call_json(SyscallOp.SYS_WORLD_EVENT, payload, check=check)

    def world_state(self, world_id: str, *, check: bool | None = None) -> dict:
        """WORLD_STATE: ``state`` (metrics, seed, active events, members)."""
        return self.call_json(SyscallOp.SYS_WORLD_STATE, {"world_id": world_id}, check=check)

    def world_snapshot(self, world_id: str, *, check: bool | None = None) -> dict:
        """WORLD_SNAPSHOT (operators or the creator): ``snapshot`` for WORLD_RESTORE."""
        return self.call_json(SyscallOp.SYS_WORLD_SNAPSHOT, {"world_id": world_id}, check=check)

    def world_restore(self, snapshot: dict, new_world_id: str | None = None, *, check: bool | None = None) -> dict:
        """WORLD_RESTORE: a new world from a snapshot: ``world_id, members_restored, members_dropped``."""
        return self.call_json(
            SyscallOp.SYS_WORLD_RESTORE, {"snapshot": snapshot, "new_world_id": new_world_id or ""}, check=check
        )

    def tunnel_connect(
        self, relay_url: str | None = None, machine_id: str | None = None, token: str | None = None
    ) -> dict:
        """TUNNEL_CONNECT (operators only): dial a relay (docs/relay.md); fields not given come from
        TUNNEL_CONFIG. Raises TunnelFailedError when the relay cannot be reached or refuses the token."""
        payload: dict[str, Any] = {}
        if relay_url:
            payload["relay_url"] = relay_url
        if machine_id:
            payload["machine_id"] = machine_id
        if token:
            payload["token"] = token
        return self.call_json(SyscallOp.SYS_TUNNEL_CONNECT, payload)

    def tunnel_disconnect(self) -> dict:
        """TUNNEL_DISCONNECT (operators only): close the tunnel and stop reconnecting."""
        return self.call_json(SyscallOp.SYS_TUNNEL_DISCONNECT, {})

    def tunnel_status(self) -> dict:
        """TUNNEL_STATUS (operators only): ``{connected, relay_url, machine_id, remote_agent_count, state, …}``."""
        return self.call_json(SyscallOp.SYS_TUNNEL_STATUS, {})

    def tunnel_list_remotes(self) -> dict:
        """TUNNEL_LIST_REMOTES (operators only): ``{agents: [{agent_id, name, user, connected_at}], count}``."""
        return self.call_json(SyscallOp.SYS_TUNNEL_LIST_REMOTES, {})

    def tunnel_config(
        self,
        relay_url: str | None = None,
        machine_id: str | None = None,
        token: str | None = None,
        reconnect_interval: int | None = None,
    ) -> dict:
        payload = {
            k: v
            for k, v in (
                ("relay_url", relay_url),
                ("machine_id", machine_id),
                ("token", token),
                ("reconnect_interval", reconnect_interval),
            )
            if v is not None
        }
        return self.call_json(SyscallOp.SYS_TUNNEL_CONFIG, payload)

    # ------------------------------------------------------------------ journaled steps (docs/durable.md)

    def step_begin(
        self, key: str, fresh: bool = False, on_divergence: str | None = None, *, check: bool | None = None
    ) -> dict:
        """STEP_BEGIN (ext): opens the journaled step ``key`` on this connection: ``success, key, state
        (new | in_progress | completed), entries, depth``. ``fresh`` forgets its journal first;
        ``on_divergence="truncate"`` goes live where a call differs from the journal (default: the call
        fails with ``journal_diverged``). Prefer :meth:`step` or :func:`durable_step`."""
        payload = _given(key=key, fresh=True if fresh else None, on_divergence=on_divergence)
        reply = self.call_json(SyscallOp.SYS_STEP_BEGIN, payload, check=check)
        if isinstance(reply, dict) and reply.get("success") is True:
            self._steps.append(key)
        return reply

    def step_end(
        self, key: str | None = None, complete: bool = True, clear: bool = False, *, check: bool | None = None
    ) -> dict:
        """STEP_END (ext): closes the innermost step of this connection (``key``: a check), as complete
        (opened again, every call replays), or with ``complete=False`` left in progress, or cleared:
        ``success, key, state, entries, replayed, live``."""
        payload = _given(key=key, complete=None if complete else False, clear=True if clear else None)
        reply = self.call_json(SyscallOp.SYS_STEP_END, payload, check=check)
        if isinstance(reply, dict) and reply.get("success") is True and self._steps:
            self._steps.pop()
        return reply

    def step_status(
        self, key: str | None = None, agent_id: int | None = None, name: str | None = None, *, check: bool | None = None
    ) -> dict:
        """STEP_STATUS (ext): ``success, owner, steps[{key, state, entries, bytes, created_at, updated_at,
        open, position?}], entries, bytes, limit`` of the caller's journal (operators: ``agent_id`` or
        ``name``, another agent's)."""
        return self.call_json(SyscallOp.SYS_STEP_STATUS, _given(key=key, agent_id=agent_id, name=name), check=check)

    def step_clear(
        self, key: str | None = None, agent_id: int | None = None, name: str | None = None, *, check: bool | None = None
    ) -> dict:
        """STEP_CLEAR (ext): forgets one step (``key``) or every step of the caller's journal (operators:
        another agent's): ``success, owner, cleared, entries``."""
        return self.call_json(SyscallOp.SYS_STEP_CLEAR, _given(key=key, agent_id=agent_id, name=name), check=check)

    @contextlib.contextmanager
    def step(self, key: str, *, fresh: bool = False, on_divergence: str | None = None) -> Iterator[dict]:
        """``with client.step("summarize:doc-17"): ...`` runs the block as a journaled step: its THINK,
        HTTP and EXEC calls on this client are journaled by the kernel, and when the block runs again
        (after a crash or a restart of the agent) the same calls in the same order are answered from the
        journal. Yields the STEP_BEGIN reply. Leaving the block normally ends the step as complete; an
        exception leaves it in progress (it replays next time) and goes on. Kernel refusals raise
        (:class:`KernelError` subclasses, e.g. ``JournalDivergedError``)."""
        begun = self.step_begin(key, fresh, on_divergence, check=True)
        depth = len(self._steps)
        try:
            yield begun
        except BaseException:
            if len(self._steps) == depth and self._steps[-1] == key:
                with contextlib.suppress(Exception):
                    self.step_end(key, complete=False, check=False)
            raise
        if len(self._steps) != depth or self._steps[-1] != key:
            raise ConnectionClosedError(f"journaled step {key!r} was closed under the block (connection lost?)")
        self.step_end(key, complete=True, check=True)

    def durable_step(self, key: str | Callable[..., str], *, fresh: bool = False, on_divergence: str | None = None):
        """A decorator: each call of the function runs as the journaled step ``key`` on this client (see
        :func:`durable_step`)."""
        return durable_step(key, self, fresh=fresh, on_divergence=on_divergence)


AgentOSClient = CloveClient  # name used by older public-SDK code

_default_client: CloveClient | None = None
_default_lock = threading.Lock()


def _client_for(client: CloveClient | None, bound: inspect.BoundArguments) -> CloveClient:
    """The client a durable step runs on: the given one, else a CloveClient among the function's
    arguments, else this process's default client (``$CLOVE_SOCKET``), made on first use."""
    global _default_client
    if client is not None:
        return client
    for v in bound.arguments.values():
        if isinstance(v, CloveClient):
            return v
    with _default_lock:
        if _default_client is None:
            _default_client = CloveClient()
        return _default_client


def durable_step(
    key: str | Callable[..., str],
    client: CloveClient | None = None,
    *,
    fresh: bool = False,
    on_divergence: str | None = None,
) -> Callable[[_F], _F]:
    """``@durable_step("summarize:{doc_id}")``: every call of the decorated function runs as a journaled
    step (:meth:`CloveClient.step`), so that after a crash its THINK, HTTP and EXEC results come from the
    kernel's journal instead of being made again. ``key`` is formatted with the call's arguments by name
    (``{doc_id}``), or is a function of the same arguments returning the key. The step runs on
    ``client``, else on a :class:`CloveClient` passed to the function, else on a default client of this
    process (``$CLOVE_SOCKET``, as agents are given)."""

    def decorate(fn: _F) -> _F:
        import inspect  # only when a step is decorated: a heavy import no plain agent needs

        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            k = key(*args, **kwargs) if callable(key) else key.format(**bound.arguments)
            with _client_for(client, bound).step(k, fresh=fresh, on_divergence=on_divergence):
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


class ThinkStream:
    """A streamed THINK (:meth:`CloveClient.think_stream`): an iterator over the answer's pieces, fetched
    with THINK_STREAM_NEXT as it is iterated.

    Pieces are ``{"content": str}`` or ``{"tool_call": {"index", "id"?, "name"?, "arguments"?}}``; in order
    they make THINK's ``content`` and ``tool_calls``. Once the iterator is exhausted, :attr:`result` is
    THINK's reply, or the error reply that ended the stream (raised instead when the client is strict
    or ``check=True``). Leaving a ``with`` block before the end cancels the stream.
    """

    def __init__(self, client: CloveClient, reply: Any, wait: float, check: bool | None) -> None:
        self._client = client
        self._wait = wait
        self._check = check
        self._pieces: deque[dict] = deque()
        ok = isinstance(reply, dict) and not _is_error(reply)
        #: the kernel's id of the stream (None when THINK_STREAM was refused)
        self.stream_id: int | None = reply.get("stream_id") if ok else None
        #: the provider serving the call
        self.provider: str | None = reply.get("provider") if ok else None
        #: THINK's reply once the stream is exhausted; the error reply when it failed or was refused
        self.result: dict | None = None if ok else reply
        self._done = not ok

    @property
    def done(self) -> bool:
        """True once the stream ended (its end taken, failed, refused or cancelled)."""
        return self._done

    def __iter__(self) -> ThinkStream:
        return self

    def __next__(self) -> dict:
        while not self._pieces:
            if self._done:
                raise StopIteration
            self._fetch()
        return self._pieces.popleft()

    def _fetch(self) -> None:
        try:
            r = self._client.think_stream_next(self.stream_id, self._wait, check=self._check)  # type: ignore[arg-type]
        except KernelError as e:
            self._done = True
            self.result = e.reply if isinstance(e.reply, dict) else {"success": False, "error": str(e)}
            raise
        if _is_error(r):
            self._done = True
            self.result = r
            return
        self._pieces.extend(r.get("deltas") or [])
        if r.get("done"):
            self._done = True
            self.result = r.get("result")

    def collect(self) -> dict | None:
        """Iterates to the end and returns :attr:`result`."""
        for _ in self:
            pass
        return self.result

    def cancel(self) -> dict | None:
        """THINK_STREAM_CANCEL, unless the stream already ended: its provider call is aborted."""
        if self._done or self.stream_id is None:
            return None
        self._done = True
        self._pieces.clear()
        reply = self._client.think_stream_cancel(self.stream_id, check=False)
        if self.result is None:
            self.result = {"success": False, "error": "THINK stream cancelled", "code": "cancelled"}
        return reply

    def __enter__(self) -> ThinkStream:
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.cancel()


def connect(socket_path: str | None = None, timeout: float | None = None, *, strict: bool = False) -> CloveClient:
    """Creates a connected client; raises :class:`ConnectionClosedError` (a ``ConnectionError``) if the
    kernel cannot be reached."""
    client = CloveClient(socket_path, timeout, strict=strict)
    client._connect()
    return client


# KernelError is re-exported here for `from clove_sdk.client import KernelError` convenience
__all__ += ["KernelError"]
