"""Clove syscalls as tools a model may call, described once for every adapter (standard library only).

Each :class:`ToolSpec` names a tool, says what it does, lists its parameters (the adapters turn them into
their framework's argument schema) and runs it on a :class:`~clove_sdk.CloveClient`. The kernel checks,
counts and audits every call exactly as if the agent had made it by hand: a tool is nothing but a
syscall. A refusal of the kernel (``permission_denied``, ``not_found``, a budget…) raises
:class:`ToolRefused`, which each adapter reports the way its framework reports a failed tool (CrewAI: a
``ToolFailure``; AutoGen: an error result), so the model sees the reason and may try something else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Optional

from ..client import CloveClient

__all__ = ["Param", "ToolSpec", "ToolRefused", "TOOL_SPECS", "run_tool", "args_model", "tool_names", "REQUIRED"]


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


#: the default of a parameter the model must give
REQUIRED: Any = _Required()


@dataclass(frozen=True)
class Param:
    """One argument of a tool: ``type`` is ``str``, ``int``, ``float``, ``bool``, ``dict`` or ``object``
    (any JSON value)."""

    name: str
    type: Any
    description: str
    default: Any = REQUIRED
    choices: tuple[str, ...] = ()

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    params: tuple[Param, ...]
    call: Callable[[CloveClient, dict[str, Any]], Any]
    #: the reply fields worth showing the model (all but ``success`` when empty)
    keep: tuple[str, ...] = field(default=())


class ToolRefused(Exception):
    """The kernel refused a tool's syscall; ``code`` is its error code (``permission_denied``, …)."""

    def __init__(self, tool: str, reply: dict[str, Any]) -> None:
        self.tool = tool
        self.reply = reply
        self.code = str(reply.get("code") or "error")
        self.error = str(reply.get("error") or "refused")
        super().__init__(f"{tool}: the kernel refused: {self.error} [{self.code}]")


def _send(c: CloveClient, a: dict[str, Any]) -> Any:
    to = a["to"]
    if isinstance(to, str) and to.isdigit():
        to = int(to)
    return c.send_message(a.get("message"), to=to, check=False)


def _recv(c: CloveClient, a: dict[str, Any]) -> Any:
    wait = float(a.get("wait_seconds") or 0)
    return c.recv_messages(int(a.get("max") or 10), timeout=wait if wait > 0 else None, check=False)


def _store(c: CloveClient, a: dict[str, Any]) -> Any:
    return c.store(a["key"], a.get("value"), a.get("scope") or "global", a.get("ttl"), check=False)


def _fetch(c: CloveClient, a: dict[str, Any]) -> Any:
    return c.fetch(a["key"], a.get("scope") or None, check=False)


def _http(c: CloveClient, a: dict[str, Any]) -> Any:
    method, timeout = a.get("method") or "GET", int(a.get("timeout") or 30)
    return c.http(a["url"], method, a.get("headers") or None, a.get("body"), timeout, check=False)


def _exec(c: CloveClient, a: dict[str, Any]) -> Any:
    return c.exec(a["command"], a.get("cwd") or None, int(a.get("timeout") or 30), check=False)


def _read(c: CloveClient, a: dict[str, Any]) -> Any:
    return c.read_file(a["path"], check=False)


def _write(c: CloveClient, a: dict[str, Any]) -> Any:
    return c.write_file(a["path"], a["content"], a.get("mode") or "write", check=False)


_SCOPES = ("global", "agent", "session")

#: the tools, by name
TOOL_SPECS: dict[str, ToolSpec] = {
    s.name: s
    for s in (
        ToolSpec(
            "clove_send",
            "Send a message (any JSON) to another Clove agent, by its name.",
            (
                Param("to", str, "the name of the agent to send to"),
                Param("message", object, "the message: text or any JSON value"),
            ),
            _send,
            ("delivered_to",),
        ),
        ToolSpec(
            "clove_recv",
            "Take messages from this agent's mailbox, optionally waiting for one to arrive.",
            (
                Param("max", int, "at most this many messages", 10),
                Param("wait_seconds", float, "wait up to this long for a message (0: do not wait)", 0.0),
            ),
            _recv,
            ("messages", "count"),
        ),
        ToolSpec(
            "clove_store",
            "Store a value (any JSON) under a key in the Clove state store.",
            (
                Param("key", str, "the key"),
                Param("value", object, "the value: text or any JSON value"),
                Param("scope", str, "global (everyone reads it), agent (private) or session", "global", _SCOPES),
                Param("ttl", float, "seconds until the key expires (none: never)", None),
            ),
            _store,
            ("key",),
        ),
        ToolSpec(
            "clove_fetch",
            "Read a key from the Clove state store.",
            (
                Param("key", str, "the key"),
                Param("scope", str, "global, agent or session (none: agent first, then the others)", None, _SCOPES),
            ),
            _fetch,
            ("exists", "value", "scope"),
        ),
        ToolSpec(
            "clove_http",
            "Make an HTTP request (the kernel makes it, checking this agent's rights).",
            (
                Param("url", str, "http or https URL"),
                Param("method", str, "HTTP method", "GET"),
                Param("headers", dict, "request headers", None),
                Param("body", str, "request body", None),
                Param("timeout", int, "seconds", 30),
            ),
            _http,
            ("status_code", "ok", "headers", "body", "body_encoding", "truncated", "final_url"),
        ),
        ToolSpec(
            "clove_exec",
            "Run a command inside this agent's sandbox; returns its exit code and output.",
            (
                Param("command", str, "the command line"),
                Param("cwd", str, "working directory (default: the agent's own)", None),
                Param("timeout", int, "seconds", 30),
            ),
            _exec,
            ("exit_code", "stdout", "stderr", "timed_out", "truncated"),
        ),
        ToolSpec(
            "clove_read",
            "Read a file this agent may read.",
            (Param("path", str, "the file's path"),),
            _read,
            ("content", "size", "encoding"),
        ),
        ToolSpec(
            "clove_write",
            "Write (or append to) a file this agent may write.",
            (
                Param("path", str, "the file's path"),
                Param("content", str, "the text to write"),
                Param("mode", str, "write (replace) or append", "write", ("write", "append")),
            ),
            _write,
            ("bytes_written",),
        ),
    )
}


def tool_names(include: Any = None) -> list[str]:
    """The tools ``include`` names (``"store"`` or ``"clove_store"``; None: all of them), in order."""
    if include is None:
        return list(TOOL_SPECS)
    if isinstance(include, str):
        raise TypeError("include is a list of tool names, not a string")
    names = [n if n.startswith("clove_") else f"clove_{n}" for n in include]
    unknown = [n for n in names if n not in TOOL_SPECS]
    if unknown:
        raise ValueError(f"clove_tools: unknown tools {unknown}; known: {list(TOOL_SPECS)}")
    return names


def run_tool(spec: ToolSpec, client: CloveClient, args: dict[str, Any]) -> str:
    """Runs the tool's syscall and returns the reply's useful fields as JSON text for the model; raises
    :class:`ToolRefused` when the kernel refused the call."""
    for p in spec.params:
        if p.required and args.get(p.name) is None:
            raise ValueError(f"{spec.name}: argument {p.name!r} is required")
        if p.choices and args.get(p.name) is not None and args[p.name] not in p.choices:
            raise ValueError(f"{spec.name}: {p.name} must be one of {', '.join(p.choices)}, not {args[p.name]!r}")
    reply = spec.call(client, {k: v for k, v in args.items() if v is not None})
    if not isinstance(reply, dict):
        raise ToolRefused(spec.name, {"error": f"unexpected reply {reply!r}", "code": "invalid_reply"})
    # a refusal carries the kernel's error code; a command that ran and failed (EXEC's exit code 3) does not,
    # and is a result the model should see
    if reply.get("success") is False and (reply.get("code") or spec.name != "clove_exec"):
        raise ToolRefused(spec.name, reply)
    keep = spec.keep or tuple(k for k in reply if k != "success")
    shown = {k: reply[k] for k in keep if k in reply}
    return json.dumps(shown, ensure_ascii=False)


def args_model(spec: ToolSpec, prefix: str = "") -> Any:
    """The pydantic model of a tool's arguments, which CrewAI and AutoGen both describe tools by (pydantic
    comes with either; it is imported here, when an adapter asks, never by ``import clove_sdk``)."""
    from pydantic import Field, create_model

    def annotation(p: Param) -> Any:
        t = Literal[p.choices] if p.choices else {object: Any, dict: dict[str, str]}.get(p.type, p.type)
        return t if p.required else Optional[t]

    fields = {
        p.name: (annotation(p), Field(... if p.required else p.default, description=p.description)) for p in spec.params
    }
    camel = "".join(w.capitalize() for w in spec.name.split("_"))
    return create_model(f"{prefix}{camel}Args", **fields)
