"""CrewAI on Clove: the model through THINK, Clove syscalls as tools, each crew member its own Clove agent.

    from crewai import Agent, Crew, Task
    from clove_sdk.integrations.crewai import CloveLLM, CloveMember, clove_tools, serve_member

- :class:`CloveLLM` is a CrewAI ``BaseLLM`` whose calls are THINKs: the kernel calls the operator's
  provider (the agent never holds a key), counts the tokens against the agent's quota and audits the call.
  Conversation turns, tools (CrewAI's native function calling) and tool results go through; usage is
  reported to CrewAI (``crew.usage_metrics``).
- :func:`clove_tools` gives CrewAI ``BaseTool`` s for SEND, RECV, STORE, FETCH, HTTP, EXEC, READ and
  WRITE; a refusal of the kernel becomes a ``ToolFailure`` (the model reads why; the task's
  ``tool_failures`` records it).
- :func:`serve_member` runs one crew member (a CrewAI ``Agent``) as a Clove agent process: it takes the
  tasks sent to it by name, runs them, and sends back the output. :class:`CloveMember` stands in for it in
  a ``Crew`` anywhere else (a coordinator process): the crew runs as usual, and each of its tasks runs in
  its member's process. A member SIGKILLed in the middle of a task is restarted by the kernel and gets
  the task again (see ``_mailbox`` for how a task is run once and answered once).

Inside a Clove agent (``$CLOVE_AGENT_NAME`` set), importing this module first turns CrewAI's telemetry and
tracing off (an agent has no network unless it was given one) and, when ``$HOME`` is not writable (an
agent runs as a uid of its own), points ``HOME`` and ``XDG_DATA_HOME`` at the agent's own directory, where
CrewAI keeps its storage.
"""

from __future__ import annotations

import os
import tempfile


def _agent_environment() -> None:
    """What CrewAI needs before it is imported, in a sandboxed agent: no telemetry, writable storage."""
    if not os.environ.get("CLOVE_AGENT_NAME"):
        return
    for k, v in (
        ("OTEL_SDK_DISABLED", "true"),
        ("CREWAI_DISABLE_TELEMETRY", "true"),
        ("CREWAI_DISABLE_TRACKING", "true"),
        ("CREWAI_TRACING_ENABLED", "false"),
    ):
        os.environ.setdefault(k, v)
    home = os.environ.get("HOME") or ""
    if not home or not os.access(home, os.W_OK):
        cwd = os.getcwd()
        os.environ["HOME"] = cwd if os.access(cwd, os.W_OK) else tempfile.gettempdir()
        os.environ["XDG_DATA_HOME"] = os.path.join(os.environ["HOME"], ".local", "share")


_agent_environment()

import asyncio  # noqa: E402
import json  # noqa: E402
import threading  # noqa: E402
from typing import Any, Literal  # noqa: E402

from crewai import Agent, Task  # noqa: E402
from crewai.events.types.llm_events import LLMCallType  # noqa: E402
from crewai.hooks.dispatch import HookAborted  # noqa: E402
from crewai.llms.base_llm import BaseLLM, LLMCallBlockedError, llm_call_context  # noqa: E402
from crewai.tools import BaseTool  # noqa: E402
from crewai.tools.tool_failure import ToolFailure, ToolFailureReason  # noqa: E402
from pydantic import BaseModel, Field, PrivateAttr  # noqa: E402

from ..client import CloveClient  # noqa: E402
from ._mailbox import Caller, RemoteCallError, serve, shared_caller  # noqa: E402
from ._tools import TOOL_SPECS, ToolRefused, args_model, run_tool, tool_names  # noqa: E402

__all__ = [
    "CloveLLM",
    "CloveTool",
    "CloveMember",
    "RemoteCallError",
    "clove_tools",
    "serve_member",
    "think_messages",
    "TASK_KIND",
]

#: the kind of call a :class:`CloveMember` sends and :func:`serve_member` answers
TASK_KIND = "crewai.task"

_RETRYABLE = {"quota_exceeded", "mailbox_full", "timeout", "cluster_unavailable"}


def _text(content: Any) -> str:
    """A turn's text: CrewAI sends a string, None (an assistant turn of tool calls only) or content blocks."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, str):
                parts.append(block)
            elif isinstance(block, dict) and block.get("type") == "text":
                parts.append(str(block.get("text", "")))
            else:
                kind = block.get("type") if isinstance(block, dict) else type(block).__name__
                raise ValueError(f"CloveLLM: THINK takes text turns; a {kind!r} content block cannot be sent")
        return "".join(parts)
    return str(content)


def _arguments(raw: Any) -> Any:
    """Tool call arguments as an object (CrewAI keeps them as OpenAI's JSON text)."""
    if isinstance(raw, str):
        try:
            return json.loads(raw) if raw.strip() else {}
        except ValueError:
            return raw  # the kernel takes the provider's text as it was
    return raw if raw is not None else {}


def _json_text(args: Any) -> str:
    """Arguments as CrewAI's executor takes them: JSON text (a provider's non-JSON text stays as it was)."""
    return args if isinstance(args, str) else json.dumps(args if args is not None else {})


def think_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """CrewAI's (OpenAI-shaped) messages as THINK's ``messages``: ``system``/``user``/``assistant`` turns,
    an assistant turn's ``tool_calls`` (``{id, name, arguments}``), ``tool`` turns with ``tool_call_id``."""
    out: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        role = m.get("role")
        turn: dict[str, Any] = {"role": role, "content": _text(m.get("content"))}
        if role == "assistant" and m.get("tool_calls"):
            calls = []
            for tc in m["tool_calls"]:
                fn = tc.get("function") or {}
                args = _arguments(fn.get("arguments", tc.get("arguments")))
                call = {"name": fn.get("name") or tc.get("name"), "arguments": args}
                if tc.get("id"):
                    call["id"] = str(tc["id"])
                calls.append(call)
            turn["tool_calls"] = calls
        elif role == "tool":
            if not m.get("tool_call_id"):
                raise ValueError(f"CloveLLM: tool message {i} has no tool_call_id")
            turn["tool_call_id"] = str(m["tool_call_id"])
            if m.get("name"):
                turn["name"] = str(m["name"])
        elif role not in ("system", "user", "assistant"):
            raise ValueError(f"CloveLLM: message {i} has role {role!r}; THINK takes system, user, assistant and tool")
        out.append(turn)
    return out


class CloveLLM(BaseLLM):
    """A CrewAI LLM whose every call is a THINK of the kernel this process talks to.

    ``model="clove"`` (the default) lets the kernel use the operator's default model; any other name is
    sent as THINK's ``model``. ``clove_provider`` names one of the operator's providers. ``client`` is a
    :class:`~clove_sdk.CloveClient` to use; without one, each thread gets its own connection to
    ``socket_path`` (default ``$CLOVE_SOCKET``), since a THINK holds its connection until the answer is in.
    """

    llm_type: str = "clove"
    clove_provider: str | None = None
    socket_path: str | None = None
    timeout: float | None = 600.0
    context_window: int = 32768
    thinking_level: Literal["LOW", "MEDIUM", "HIGH"] | None = None
    tool_choice: Any = None
    client: Any = Field(default=None, exclude=True)
    _local: threading.local = PrivateAttr(default_factory=threading.local)

    def __init__(self, model: str = "clove", **data: Any) -> None:
        data.setdefault("provider", "clove")
        super().__init__(model=model, **data)

    # -- the call -----------------------------------------------------------------------------------
    def _client(self) -> CloveClient:
        if self.client is not None:
            return self.client
        c = getattr(self._local, "client", None)
        if c is None:
            c = self._local.client = CloveClient(self.socket_path, timeout=self.timeout)
        return c

    def _payload(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> dict[str, Any]:
        payload: dict[str, Any] = {"messages": think_messages(messages)}
        for k, v in (
            ("model", None if self.model == "clove" else self.model),
            ("provider", self.clove_provider),
            ("temperature", self.temperature),
            ("max_tokens", int(self.max_tokens) if self.max_tokens else None),
            ("thinking_level", self.thinking_level),
        ):
            if v is not None:
                payload[k] = v
        if tools:
            payload["tools"] = json.loads(json.dumps(tools, default=str))
            if self.tool_choice is not None:
                payload["tool_choice"] = self.tool_choice
        return payload

    def call(
        self,
        messages: str | list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        callbacks: list[Any] | None = None,
        available_functions: dict[str, Any] | None = None,
        from_task: Any = None,
        from_agent: Any = None,
        response_model: type[BaseModel] | None = None,
    ) -> Any:
        """One THINK. Tool calls come back as OpenAI-style dicts for CrewAI's executor to run (or, when
        ``available_functions`` is given, the first one is run here, as CrewAI's own providers do)."""
        with llm_call_context():
            self._emit_call_started_event(
                messages=messages,
                tools=tools,
                callbacks=callbacks,
                available_functions=available_functions,
                from_task=from_task,
                from_agent=from_agent,
            )
            try:
                formatted = self._format_messages(messages)
                self._invoke_before_llm_call_hooks(formatted, from_agent)
                reply = self._client().think(**self._payload(formatted, tools), check=True)
            except (HookAborted, LLMCallBlockedError) as e:
                self._emit_call_denied_event(e, from_task, from_agent)
                raise
            except Exception as e:
                self._emit_call_failed_event(error=f"THINK failed: {e}", from_task=from_task, from_agent=from_agent)
                raise
            usage = {
                "prompt_tokens": int(reply.get("input_tokens") or 0),
                "completion_tokens": int(reply.get("output_tokens") or 0),
                "total_tokens": int(reply.get("tokens") or 0),
            }
            self._track_token_usage_internal(usage)
            finish = reply.get("finish_reason")
            calls = reply.get("tool_calls") or []
            if calls and not available_functions:
                out = [
                    {
                        "id": tc.get("id") or f"call_{i}",
                        "type": "function",
                        "function": {"name": tc["name"], "arguments": _json_text(tc.get("arguments"))},
                    }
                    for i, tc in enumerate(calls)
                ]
                self._emit_call_completed_event(
                    response=out,
                    call_type=LLMCallType.TOOL_CALL,
                    from_task=from_task,
                    from_agent=from_agent,
                    messages=formatted,
                    usage=usage,
                    finish_reason=finish,
                )
                return out
            if calls and available_functions:
                args = calls[0].get("arguments")
                result = self._handle_tool_execution(
                    function_name=calls[0]["name"],
                    function_args=args if isinstance(args, dict) else {},
                    available_functions=available_functions,
                    from_task=from_task,
                    from_agent=from_agent,
                )
                if result is not None:
                    return result
            content = reply.get("content") or ""
            if response_model is not None:
                structured = self._validate_structured_output(content, response_model)
                self._emit_call_completed_event(
                    response=structured,
                    call_type=LLMCallType.LLM_CALL,
                    from_task=from_task,
                    from_agent=from_agent,
                    messages=formatted,
                    usage=usage,
                    finish_reason=finish,
                )
                return structured
            content = self._apply_stop_words(content)
            self._emit_call_completed_event(
                response=content,
                call_type=LLMCallType.LLM_CALL,
                from_task=from_task,
                from_agent=from_agent,
                messages=formatted,
                usage=usage,
                finish_reason=finish,
            )
            return self._invoke_after_llm_call_hooks(formatted, content, from_agent)

    async def acall(
        self,
        messages: str | list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        callbacks: list[Any] | None = None,
        available_functions: dict[str, Any] | None = None,
        from_task: Any = None,
        from_agent: Any = None,
        response_model: type[BaseModel] | None = None,
    ) -> Any:
        # a THINK blocks its connection: a worker thread (with a connection of its own) does it
        return await asyncio.to_thread(
            self.call, messages, tools, callbacks, available_functions, from_task, from_agent, response_model
        )

    # -- what CrewAI asks of a model ----------------------------------------------------------------
    def supports_function_calling(self) -> bool:
        return True

    def supports_stop_words(self) -> bool:
        return True  # applied to the answer here (THINK has no stop sequences)

    def get_context_window_size(self) -> int:
        return self.context_window

    def get_input_tokens_count(self, messages: Any, tools: Any = None, response_model: Any = None) -> int:
        """The kernel's own estimate (about 4 characters a token), without CrewAI's warning."""
        text = messages if isinstance(messages, str) else json.dumps(messages, default=str)
        return (len(text) + 3) // 4

    def close(self) -> None:
        c = getattr(self._local, "client", None)
        if c is not None:
            c.close()
            self._local.client = None


# -- Clove syscalls as CrewAI tools ---------------------------------------------------------------------


def _never_cache(_args: Any = None, _result: Any = None) -> bool:
    """Tools act on the world (a mailbox, a file, a command): their results are never cached."""
    return False


class CloveTool(BaseTool):
    """One Clove syscall as a CrewAI tool (see :func:`clove_tools`)."""

    spec_name: str
    client: Any = Field(default=None, exclude=True)
    socket_path: str | None = None
    _own: CloveClient | None = PrivateAttr(default=None)

    def _client(self) -> CloveClient:
        if self.client is not None:
            return self.client
        if self._own is None:
            self._own = CloveClient(self.socket_path, timeout=60.0)
        return self._own

    def _run(self, **kwargs: Any) -> Any:
        try:
            return run_tool(TOOL_SPECS[self.spec_name], self._client(), kwargs)
        except ToolRefused as e:
            return ToolFailure(
                message=str(e),
                reason=ToolFailureReason.TOOL_REPORTED,
                code=e.code,
                retryable=e.code in _RETRYABLE,
                details={"error": e.error},
            )


def clove_tools(
    client: CloveClient | None = None, include: list[str] | None = None, *, socket_path: str | None = None
) -> list[CloveTool]:
    """CrewAI tools for Clove's syscalls: ``clove_send``, ``clove_recv``, ``clove_store``, ``clove_fetch``,
    ``clove_http``, ``clove_exec``, ``clove_read``, ``clove_write``, or those ``include`` names (``"store"``
    or ``"clove_store"``). They share ``client`` if given, else one connection of their own."""
    names = tool_names(include)
    shared = client or CloveClient(socket_path, timeout=60.0)
    return [
        CloveTool(
            name=TOOL_SPECS[n].name,
            description=TOOL_SPECS[n].description,
            args_schema=args_model(TOOL_SPECS[n]),
            spec_name=n,
            client=shared,
            cache_function=_never_cache,
        )
        for n in names
    ]


# -- crew members as Clove agents ------------------------------------------------------------------------


def _usage_of(agent: Any) -> dict[str, int]:
    llm = getattr(agent, "llm", None)
    if not isinstance(llm, BaseLLM):
        return {}
    u = llm.get_token_usage_summary()
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
        "successful_requests": u.successful_requests,
    }


def serve_member(
    agent: Agent,
    *,
    client: CloveClient | None = None,
    key: str = "clove.crewai.member",
    stop: Any = None,
) -> None:
    """Runs ``agent`` as this Clove agent's crew member: takes the tasks a :class:`CloveMember` sends to
    this agent's name, runs each (``Task.execute_sync`` with the task's context) and sends back its output
    and the tokens it used. Returns when ``stop()`` is true or the connection to the kernel ends."""

    def handle(kind: str, body: Any) -> dict[str, Any]:
        if kind != TASK_KIND:
            raise ValueError(f"serve_member: a crew member takes {TASK_KIND} calls, not {kind!r}")
        if not isinstance(body, dict) or not isinstance(body.get("description"), str):
            raise ValueError("serve_member: a task needs a description")
        task = Task(
            description=body["description"],
            expected_output=str(body.get("expected_output") or "the result"),
            agent=agent,
            **({"name": body["name"]} if body.get("name") else {}),
        )
        before = _usage_of(agent)
        out = task.execute_sync(agent=agent, context=body.get("context") or None)
        after = _usage_of(agent)
        return {
            "raw": out.raw if isinstance(out.raw, str) else str(out.raw),
            "member": os.environ.get("CLOVE_AGENT_NAME"),
            "usage": {k: after[k] - before.get(k, 0) for k in after},
            "tool_failures": [f.summary() for f in getattr(out, "tool_failures", None) or []],
        }

    serve(handle, client=client, key=key, stop=stop)


class CloveMember(Agent):
    """A crew member that runs in another Clove agent process (one running :func:`serve_member`),
    named by ``member``. Put it in a ``Crew`` like any agent: its tasks are sent to that agent through the
    kernel, with their context, and its answer is the task's output; the tokens the member used count in
    this crew's ``usage_metrics``. ``call_timeout`` (seconds, None: no limit) bounds one task;
    ``resend_after`` is when an unanswered task is sent again (the member runs it once either way)."""

    member: str
    call_timeout: float | None = None
    socket_path: str | None = None
    caller: Any = Field(default=None, exclude=True)
    _usage_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def __init__(self, **data: Any) -> None:
        data.setdefault("llm", CloveLLM())  # never called here; keeps CrewAI's usage accounting in one place
        data.setdefault("allow_delegation", False)
        super().__init__(**data)

    def _caller(self) -> Caller:
        return self.caller if self.caller is not None else shared_caller(self.socket_path)

    def execute_task(self, task: Task, context: str | None = None, tools: list[Any] | None = None) -> Any:
        body = {"description": task.description, "expected_output": task.expected_output, "context": context}
        if task.name:
            body["name"] = task.name
        result = self._caller().call(self.member, TASK_KIND, body, timeout=self.call_timeout)
        if not isinstance(result, dict) or "raw" not in result:
            raise RemoteCallError(f"member {self.member!r} answered a task with {result!r}")
        usage = result.get("usage") or {}
        if isinstance(self.llm, BaseLLM) and usage:
            with self._usage_lock:  # the member's own counts, requests included, added as they are
                totals = self.llm._token_usage
                for k, v in usage.items():
                    if k in totals and isinstance(v, int):
                        totals[k] += v
        return result["raw"]

    async def aexecute_task(self, task: Task, context: str | None = None, tools: list[Any] | None = None) -> Any:
        return await asyncio.to_thread(self.execute_task, task, context, tools)
