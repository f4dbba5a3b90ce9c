"""Calls from one Clove agent to another through the kernel's mailboxes, that survive the callee's crash
(standard library only; the CrewAI and AutoGen adapters run their remote members on it).

A *server* is an agent process that answers calls (:func:`serve`); a *caller* sends it a call by name and
waits for the answer (:class:`Caller`). Both are plain SEND/RECV, so the kernel checks, counts and audits
every message, and a server is supervised like any agent: when it dies, the kernel restarts it under the
same name, with the same mailbox and the same agent-scope keys (docs/protocol.md, "IPC").

Messages (JSON):

- call: ``{"type": "clove.call", "id": <call id>, "kind": <what to do>, "body": <any JSON>}``
- answer: ``{"type": "clove.answer", "id": <call id>, "ok": true, "result": <any JSON>}`` or
  ``{"type": "clove.answer", "id": …, "ok": false, "error": <text>, "error_type": <exception class>}``

Delivery, and why a call is done once even when the server is SIGKILLed in the middle of it:

- The server takes one message at a time with ``RECV {"lease": true}``: the message stays leased to it
  until its next RECV, and goes back to the head of its mailbox if its process dies first, so the
  restarted server gets the call again (at-least-once).
- Before it answers, the server writes the answer, and its own state if it has one, in one STORE of an
  agent-scope key (its *checkpoint*; one write, so state and answer never disagree). A call whose id is
  already in the checkpoint is answered from there and not run again, so a redelivered call that had
  finished (the server died after the STORE, before its next RECV) does not run twice.
- The caller re-sends the same call (same id) when no answer came within ``resend_after`` seconds (a
  server that lost the message some other way, a full mailbox), and keeps the first answer of each id;
  later copies are dropped.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections import deque
from typing import Any, Callable

from ..client import CloveClient
from ..errors import TimeoutError as CloveTimeoutError
from ..protocol import SyscallOp

__all__ = ["Caller", "RemoteCallError", "serve", "shared_caller", "CALL", "ANSWER"]

CALL = "clove.call"
ANSWER = "clove.answer"
_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
log = logging.getLogger("clove_sdk.integrations")


class RemoteCallError(RuntimeError):
    """A call could not be made (the kernel refused to deliver it) or the remote side failed it."""

    def __init__(self, message: str, *, code: str | None = None, remote_type: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.remote_type = remote_type


def _is_call(body: Any) -> bool:
    return isinstance(body, dict) and body.get("type") == CALL


class Caller:
    """Sends calls to served agents by name and waits for their answers, on a connection of its own.

    A plain client's connection has a mailbox of its own; an agent's connections share the agent's one, so
    in an agent use one caller for the whole process (:func:`shared_caller`). Safe to use from several
    threads: one of them reads the mailbox at a time and hands each answer to the thread that waits for it.
    Messages that are not answers to this caller's calls are kept in :attr:`unrelated`.
    """

    def __init__(
        self, client: CloveClient | None = None, *, socket_path: str | None = None, resend_after: float = 60.0
    ) -> None:
        if resend_after <= 0:
            raise ValueError("resend_after must be > 0 seconds")
        self.client = client or CloveClient(socket_path, timeout=30.0)
        self.resend_after = resend_after
        self._cond = threading.Condition()
        self._answers: dict[str, dict[str, Any]] = {}
        self._pending: set[str] = set()
        self._receiving = False
        #: messages that arrived for this connection but answer none of its calls
        self.unrelated: deque[dict[str, Any]] = deque(maxlen=1024)

    def call(self, to: str | int, kind: str, body: Any = None, *, timeout: float | None = None) -> Any:
        """Sends ``{kind, body}`` to the agent ``to`` (a name, or an id) and returns its result; raises
        :class:`RemoteCallError` if the kernel will not deliver it or the remote side failed it, and
        :class:`TimeoutError` after ``timeout`` seconds (None: wait as long as it takes, re-sending)."""
        call_id = uuid.uuid4().hex
        msg = {"type": CALL, "id": call_id, "kind": kind, "body": body}
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._pending.add(call_id)
        try:
            while True:
                self._send(to, kind, msg)
                resend_at = time.monotonic() + self.resend_after
                until = resend_at if deadline is None else min(resend_at, deadline)
                answer = self._await(call_id, until)
                if answer is not None:
                    return self._result(to, kind, answer)
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"no answer from {to!r} to the {kind} call {call_id} within {timeout:g} s")
                log.info("no answer from %r to the %s call %s yet: sending it again", to, kind, call_id)
        finally:
            with self._cond:
                self._pending.discard(call_id)
                self._answers.pop(call_id, None)

    def _send(self, to: str | int, kind: str, msg: dict[str, Any]) -> None:
        r = self.client.send_message(msg, to=to, check=False)
        if isinstance(r, dict) and r.get("success") is False:
            if r.get("code") == "mailbox_full":  # the server is behind: the next re-send tries again
                log.warning("mailbox of %r is full; the %s call waits for the next re-send", to, kind)
                return
            raise RemoteCallError(
                f"cannot send the {kind} call to {to!r}: {r.get('error')} ({r.get('code')})", code=r.get("code")
            )

    def _await(self, call_id: str, until: float) -> dict[str, Any] | None:
        """The answer to ``call_id``, or None at ``until`` (monotonic). One thread at a time reads the
        mailbox (RECV waits in the kernel); the others wait for it to hand them their answer."""
        while True:
            with self._cond:
                if call_id in self._answers:
                    return self._answers.pop(call_id)
                left = until - time.monotonic()
                if left <= 0:
                    return None
                if self._receiving:
                    self._cond.wait(left)
                    continue
                self._receiving = True
            got: list[dict[str, Any]] = []
            try:
                r = self.client.recv_messages(64, timeout=max(0.05, min(left, 10.0)), check=True)
                got = list(r.get("messages") or [])
            except CloveTimeoutError:
                pass  # the reply was late; the client reconnects on the next call
            finally:
                with self._cond:
                    self._receiving = False
                    for m in got:
                        self._route(m)
                    self._cond.notify_all()

    def _route(self, m: dict[str, Any]) -> None:
        body = m.get("message")
        if isinstance(body, dict) and body.get("type") == ANSWER:
            cid = body.get("id")
            if cid in self._pending and cid not in self._answers:
                self._answers[cid] = body
            return  # a second copy of an answer (a re-sent call, a redelivered one): dropped
        self.unrelated.append(m)

    @staticmethod
    def _result(to: str | int, kind: str, answer: dict[str, Any]) -> Any:
        if answer.get("ok"):
            return answer.get("result")
        raise RemoteCallError(
            f"{to!r} failed the {kind} call: {answer.get('error')}", remote_type=answer.get("error_type")
        )

    def close(self) -> None:
        self.client.close()


_shared: dict[str | None, Caller] = {}
_shared_lock = threading.Lock()


def shared_caller(socket_path: str | None = None) -> Caller:
    """The process's caller for ``socket_path`` (default ``$CLOVE_SOCKET``): one connection, one mailbox
    reader, however many proxies use it."""
    with _shared_lock:
        c = _shared.get(socket_path)
        if c is None:
            c = _shared[socket_path] = Caller(socket_path=socket_path)
        return c


def serve(
    handle: Callable[[str, Any], Any],
    *,
    client: CloveClient | None = None,
    key: str = "clove.serve",
    snapshot: Callable[[], Any] | None = None,
    restore: Callable[[Any], None] | None = None,
    keep: int = 32,
    wait: float = 10.0,
    stop: Callable[[], bool] | None = None,
) -> None:
    """Answers calls sent to this agent: ``handle(kind, body)`` returns the result (any JSON) or raises
    (the caller gets a :class:`RemoteCallError`). Runs until ``stop()`` is true or the connection to the
    kernel ends (an error, which lets the kernel restart the agent).

    ``key`` names the agent-scope checkpoint: the answers to the last ``keep`` calls and, when
    ``snapshot`` is given, ``snapshot()`` taken after each call. When the agent starts again, ``restore``
    gets the state of the checkpoint back before the first call is taken."""
    c = client or CloveClient(timeout=60.0)
    c.hello(check=True)
    saved = c.fetch(key, "agent", check=True)
    checkpoint = saved.get("value") if saved.get("exists") else None
    done: dict[str, dict[str, Any]] = {}
    if isinstance(checkpoint, dict):
        done = {str(i): a for i, a in checkpoint.get("done") or []}
        if restore is not None and checkpoint.get("state") is not None:
            restore(checkpoint["state"])
        log.info("serve: checkpoint %r restored (%d answers)", key, len(done))
    while stop is None or not stop():
        # lease: what this RECV takes comes back if the process dies before the next RECV, which acks it
        r = c.call_json(
            SyscallOp.SYS_RECV,
            {"max": 1, "wait": True, "timeout_ms": int(wait * 1000), "lease": True},
            check=True,
            wait=wait,
        )
        for m in r.get("messages") or []:
            body, sender = m.get("message"), m.get("from")
            if not _is_call(body):
                log.warning("serve: ignoring a message that is not a call from %s", m.get("from_name") or sender)
                continue
            call_id = body.get("id")
            if not isinstance(call_id, str) or not _ID.match(call_id):
                error = "a call needs an id: 1-128 of [A-Za-z0-9_.:-]"
                answer = {"type": ANSWER, "id": call_id, "ok": False, "error": error}
            elif call_id in done:
                answer = done[call_id]
                log.info("serve: call %s was answered before; sending the same answer", call_id)
            else:
                answer = _run(handle, body)
                done[call_id] = answer
                while len(done) > keep:
                    done.pop(next(iter(done)))
                state = snapshot() if snapshot is not None else None
                c.store(key, {"state": state, "done": [[i, a] for i, a in done.items()]}, "agent", check=True)
            s = c.send_message(answer, to=sender, check=False)
            if s.get("success") is False:
                log.warning("serve: cannot answer call %s to %s: %s", call_id, sender, s.get("error"))


def _run(handle: Callable[[str, Any], Any], call: dict[str, Any]) -> dict[str, Any]:
    kind = call.get("kind")
    try:
        if not isinstance(kind, str) or not kind:
            raise ValueError("a call needs a kind")
        return {"type": ANSWER, "id": call["id"], "ok": True, "result": handle(kind, call.get("body"))}
    except Exception as e:  # noqa: BLE001 - the caller gets it as a failed call
        log.exception("serve: the %s call %s failed", kind, call.get("id"))
        error = str(e) or type(e).__name__
        return {"type": ANSWER, "id": call["id"], "ok": False, "error": error, "error_type": type(e).__name__}
