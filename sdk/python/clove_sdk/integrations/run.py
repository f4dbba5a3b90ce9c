"""Serve any framework's object as a Clove agent: ``python -m clove_sdk.integrations.run module:attr``.

The generic entry point behind ``clove run --entry module:attr`` and clove.yaml's ``entry:``. It imports
``attr`` (a dotted path is allowed: ``module:obj.attr``) from ``module`` and serves it:

- **As a service** (the default): every message ``{"input": <any JSON>, "id": <any JSON>}`` that reaches the
  agent is handed to the object; the answer goes back to the sender as ``{"id": <id>, "output": <JSON>}``,
  or ``{"id": <id>, "error": "<Type>: <text>"}`` when the object raised (the agent keeps serving) or the
  message was not such an object. ``"reply_to": "<agent name>"`` in the message sends the answer there
  instead of to the sender.
- **Once** (``--once '<json>'``, a batch job): the object runs on that input, the answer is printed as one
  JSON line ``{"output": ...}`` on stdout (the agent's log) and the program exits 0; an exception exits 1
  (so ``restart_policy: on-failure`` retries it).

How the object is run, by what it has (duck-typed, nothing imported here):

- ``kickoff`` (CrewAI ``Crew``): ``obj.kickoff(inputs=input)`` (an input that is not an object is passed as
  ``{"input": input}``);
- ``invoke`` (LangChain / LangGraph runnables, compiled graphs): ``obj.invoke(input)``;
- an ``async def run`` (AutoGen AgentChat agents and teams): ``await obj.run(task=input)`` (a non-string
  input is given as its JSON text), on one event loop that lives as long as the agent;
- anything callable: ``obj(input)``; an awaitable result is awaited on that loop.

The answer is made JSON: pydantic models by ``model_dump(mode="json")``, dataclasses field by field, lists,
tuples and dicts recursively, anything else by ``str()``.

**A crash does not lose the request.** Messages are taken under a lease (RECV ``lease``): one that the
agent was running when its process died (a segfault, an OOM kill, a watchdog kill) goes back to its
mailbox, and the agent Clove restarts runs it again, so its sender still gets an answer (at least once:
a process killed between answering and acknowledging answers twice). How many times a message was
started is kept in the agent's own store (key ``clove.run/attempt``, kept across its restarts, removed
once it is answered); one started ``--max-attempts`` times (default 3) is answered with an error instead of being run again, so
one poisonous input cannot keep the agent in a crash loop.

Only the standard library is imported here; the object's own module imports its framework.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib
import inspect
import json
import os
import sys
import traceback
from typing import Any

from ..client import CloveClient
from ..errors import CloveError, ConnectionClosedError
from ..protocol import SyscallOp

ATTEMPT_KEY = "clove.run/attempt"
DEFAULT_MAX_ATTEMPTS = 3
_WAIT_MS = 30_000
_MAX_DEPTH = 64


class EntryError(Exception):
    """The entry point cannot be loaded or is not something the runner knows how to run."""


def load_entry(spec: str) -> Any:
    """``module:attr`` (``attr`` may be dotted) → the object. Errors name what could not be found."""
    module_name, sep, attr_path = spec.partition(":")
    if not sep or not module_name or not attr_path:
        raise EntryError(f"entry {spec!r} must be module:attr (e.g. my_graph:graph)")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise EntryError(
            f"cannot import module {module_name!r} of entry {spec!r}: {e} (sys.path: {os.pathsep.join(sys.path)})"
        ) from e
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as e:
            raise EntryError(f"entry {spec!r}: {type(obj).__name__} {obj!r:.80} has no attribute {part!r}") from e
    kind_of(obj)  # refuse what cannot be run before serving anything
    return obj


def kind_of(obj: Any) -> str:
    """How the object is run: crewai, runnable, autogen or callable (see the module's docstring)."""
    if callable(getattr(obj, "kickoff", None)):
        return "crewai"
    if callable(getattr(obj, "invoke", None)):
        return "runnable"
    if inspect.iscoroutinefunction(getattr(obj, "run", None)):
        return "autogen"
    if callable(obj):
        return "callable"
    raise EntryError(
        f"{type(obj).__name__} is not runnable: expected .kickoff (CrewAI), .invoke (LangChain/LangGraph), "
        "an async .run (AutoGen) or a callable"
    )


def invoke(obj: Any, value: Any, loop: asyncio.AbstractEventLoop) -> Any:
    """Runs the object once on ``value`` the way its framework expects; returns what it returned."""
    kind = kind_of(obj)
    if kind == "crewai":
        return obj.kickoff(inputs=value if isinstance(value, dict) else {"input": value})
    if kind == "runnable":
        return obj.invoke(value)
    if kind == "autogen":
        task = value if isinstance(value, str) else json.dumps(value)
        return loop.run_until_complete(obj.run(task=task))
    out = obj(value)
    if inspect.isawaitable(out):
        out = loop.run_until_complete(out)
    return out


def to_json(value: Any, depth: int = 0) -> Any:
    """What a framework returned, as JSON: pydantic models, dataclasses and containers taken apart."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if depth > _MAX_DEPTH:
        return str(value)
    if isinstance(value, dict):
        return {str(k): to_json(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_json(v, depth + 1) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", errors="replace")
    dump = getattr(value, "model_dump", None)
    if callable(dump) and not isinstance(value, type):
        try:
            return to_json(dump(mode="json"), depth + 1)
        except Exception:  # a model with a field pydantic cannot serialize: field by field below
            pass
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name), depth + 1) for f in dataclasses.fields(value)}
    return str(value)


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class Runner:
    """Serves one object over the kernel's SEND/RECV: one leased message at a time, acknowledged once
    answered (RECV ``lease``: a message taken by a process that dies comes back to the restarted one)."""

    def __init__(self, obj: Any, client: CloveClient, loop: asyncio.AbstractEventLoop, max_attempts: int) -> None:
        self.obj = obj
        self.client = client
        self.loop = loop
        self.max_attempts = max_attempts

    def serve(self) -> int:
        self.client.hello()
        while True:
            try:
                r = self.client.call_json(SyscallOp.SYS_RECV, {"max": 1, "wait": True, "timeout_ms": _WAIT_MS,
                                                               "lease": True}, wait=_WAIT_MS / 1000)
                for msg in r.get("messages", []) if isinstance(r, dict) else []:
                    self.handle(msg)
                    # acknowledge now: a RECV that takes nothing ends the lease (the next one may wait long)
                    self.client.call_json(SyscallOp.SYS_RECV, {"max": 0})
            except ConnectionClosedError:
                return 0  # the kernel went away or is stopping the agent

    def attempt(self, msg: dict) -> int:
        """How many times this message (sender, seq) has been started, this time included; kept in the
        agent's own store, which outlives its process."""
        me = {"from": msg.get("from"), "seq": msg.get("seq")}
        r = self.client.fetch(ATTEMPT_KEY, "agent")
        last = r.get("value") if isinstance(r, dict) and r.get("exists") else None
        n = int(last.get("n", 0)) + 1 if isinstance(last, dict) and {k: last.get(k) for k in me} == me else 1
        self.client.store(ATTEMPT_KEY, {**me, "n": n}, "agent")
        return n

    def handle(self, msg: dict) -> None:
        body, sender = msg.get("message"), msg.get("from")
        rid = body.get("id") if isinstance(body, dict) else None
        to = body["reply_to"] if isinstance(body, dict) and isinstance(body.get("reply_to"), str) else sender
        if not isinstance(body, dict) or "input" not in body:
            self.reply(to, {"id": rid, "error": 'expected a message {"input": <any JSON>, "id": <any JSON>}, '
                                              f"got {json.dumps(body)[:200]}"})
            return
        n = self.attempt(msg)
        if n > 1:
            print(f"clove run: request id={rid!r} came back after the agent died (start {n})",
                  file=sys.stderr, flush=True)
        if n > self.max_attempts:
            self.reply(to, {"id": rid, "error": f"the agent died {n - 1} times running this request; "
                                                "it is not run again"})
            return
        try:
            answer: dict = {"id": rid, "output": to_json(invoke(self.obj, body["input"], self.loop))}
        except Exception as e:  # the object's own error: answered, and the agent serves on
            traceback.print_exc()
            answer = {"id": rid, "error": describe(e)}
        self.reply(to, answer)
        self.client.delete_key(ATTEMPT_KEY, "agent")  # answered: a later message never counts as its retry

    def reply(self, to: Any, answer: dict) -> None:
        if to is None or to == 0:
            print(json.dumps(answer), flush=True)  # nobody to answer (a message of the kernel itself)
            return
        try:
            r = self.client.send_message(answer, to=to)
        except (CloveError, TypeError, ValueError) as e:
            r = {"success": False, "error": describe(e)}
        if isinstance(r, dict) and r.get("success") is False:
            print(f"clove run: cannot answer {to!r}: {r.get('error')}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m clove_sdk.integrations.run",
        description="Serve a LangChain/LangGraph runnable, a CrewAI crew, an AutoGen agent or team, or a "
                    "callable as a Clove agent.",
    )
    ap.add_argument("entry", help="module:attr (attr may be dotted), e.g. my_graph:graph")
    ap.add_argument("--once", metavar="JSON", help="run once on this input (JSON), print {\"output\": …}, exit")
    ap.add_argument("--socket", help="kernel socket (default: $CLOVE_SOCKET)")
    ap.add_argument("--max-attempts", type=int, default=DEFAULT_MAX_ATTEMPTS,
                    help="starts of one request before it is answered with an error (default 3)")
    ns = ap.parse_args(argv)
    once: Any = None
    if ns.once is not None:
        try:
            once = json.loads(ns.once)
        except ValueError as e:
            print(f"clove run: --once must be JSON: {e}", file=sys.stderr)
            return 2
    # One loop for the agent's whole life, current before the user's module is imported (objects that
    # bind to the running loop at construction find this one).
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        obj = load_entry(ns.entry)
    except EntryError as e:
        print(f"clove run: {e}", file=sys.stderr)
        return 2
    try:
        if ns.once is not None:
            print(json.dumps({"output": to_json(invoke(obj, once, loop))}), flush=True)
            return 0
        with CloveClient(ns.socket, timeout=30) as client:
            return Runner(obj, client, loop, max(1, ns.max_attempts)).serve()
    finally:
        loop.close()


if __name__ == "__main__":
    sys.exit(main())
