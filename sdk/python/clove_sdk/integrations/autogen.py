"""AutoGen AgentChat on Clove: a model client on THINK, Clove syscalls as tools, agents in their own processes.

    from autogen_agentchat.agents import AssistantAgent
    from autogen_agentchat.teams import RoundRobinGroupChat
    from clove_sdk.integrations.autogen import (
        CloveChatCompletionClient, CloveRemoteAgent, clove_tools, serve_agent)

- :class:`CloveChatCompletionClient` is an ``autogen_core`` ``ChatCompletionClient`` whose calls are
  THINKs (``create``) and THINK_STREAMs (``create_stream``): the kernel calls the operator's provider
  (the agent holds no key), counts the tokens against the agent's quota and audits the call. Tool calls
  come back as ``FunctionCall`` s; ``FunctionExecutionResult`` s go back as tool turns.
- :func:`clove_tools` gives AutoGen tools for SEND, RECV, STORE, FETCH, HTTP, EXEC, READ and WRITE; a
  refusal of the kernel is raised, which AgentChat reports to the model as an error result.
- :func:`serve_agent` runs an AgentChat agent inside a Clove agent process; :class:`CloveRemoteAgent`
  stands in for it anywhere else (in a team: ``RoundRobinGroupChat([CloveRemoteAgent("writer"), …])``),
  forwarding the new messages of each turn to it by name through the kernel and returning its answer.
  The served agent's state (``save_state``) is checkpointed in an agent-scope key with each answer, so
  when it is SIGKILLed in the middle of a turn the kernel restarts it, it loads its state back, gets the
  turn again, and the team goes on (see ``_mailbox`` for how a turn is run once and answered once).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
from typing import Any, AsyncGenerator, Literal, Mapping, Sequence

from autogen_agentchat.agents import BaseChatAgent
from autogen_agentchat.base import Response
from autogen_agentchat.messages import BaseAgentEvent, BaseChatMessage, MessageFactory, TextMessage
from autogen_core import EVENT_LOGGER_NAME, CancellationToken, Component, FunctionCall
from autogen_core.logging import LLMCallEvent
from autogen_core.models import (
    AssistantMessage,
    ChatCompletionClient,
    CreateResult,
    FunctionExecutionResultMessage,
    LLMMessage,
    ModelFamily,
    ModelInfo,
    RequestUsage,
    SystemMessage,
    UserMessage,
    validate_model_info,
)
from autogen_core.tools import BaseTool, Tool, ToolSchema
from pydantic import BaseModel
from typing_extensions import Self

from ..client import CloveClient
from ..errors import kernel_error
from ._mailbox import Caller, RemoteCallError, serve, shared_caller
from ._tools import TOOL_SPECS, ToolRefused, args_model, run_tool, tool_names

__all__ = [
    "CloveChatCompletionClient",
    "CloveChatCompletionClientConfig",
    "CloveRemoteAgent",
    "CloveTool",
    "RemoteCallError",
    "clove_tools",
    "serve_agent",
    "think_messages",
]

logger = logging.getLogger(EVENT_LOGGER_NAME)

_EXTRA_ARGS = ("temperature", "max_tokens", "thinking_level", "model", "provider", "system_instruction")
_FINISH = {
    "stop": "stop",
    "end_turn": "stop",
    "length": "length",
    "max_tokens": "length",
    "tool_calls": "function_calls",
    "function_calls": "function_calls",
    "content_filter": "content_filter",
}


def _user_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for p in content:
        if not isinstance(p, str):
            raise ValueError(f"CloveChatCompletionClient: THINK takes text turns, not {type(p).__name__}")
        parts.append(p)
    return "\n".join(parts)


def _arguments(raw: str) -> Any:
    try:
        return json.loads(raw) if raw.strip() else {}
    except ValueError:
        return raw  # the provider's text, passed back as it came


def think_messages(messages: Sequence[LLMMessage]) -> list[dict[str, Any]]:
    """AutoGen's messages as THINK's ``messages``: a ``FunctionCall`` list becomes an assistant turn's
    ``tool_calls``, each ``FunctionExecutionResult`` a ``tool`` turn answering its call id."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if isinstance(m, SystemMessage):
            out.append({"role": "system", "content": m.content})
        elif isinstance(m, UserMessage):
            out.append({"role": "user", "content": _user_text(m.content)})
        elif isinstance(m, AssistantMessage):
            if isinstance(m.content, str):
                out.append({"role": "assistant", "content": m.content})
            else:
                calls = [{"id": fc.id, "name": fc.name, "arguments": _arguments(fc.arguments)} for fc in m.content]
                out.append({"role": "assistant", "content": m.thought or "", "tool_calls": calls})
        elif isinstance(m, FunctionExecutionResultMessage):
            for r in m.content:
                out.append({"role": "tool", "content": r.content, "tool_call_id": r.call_id, "name": r.name})
        else:
            raise ValueError(f"CloveChatCompletionClient: cannot send a {type(m).__name__}")
    return out


def _hang_up(conn: CloveClient) -> None:
    """Cancels the THINK a worker thread waits for: the kernel drops a call whose connection closes. A
    shutdown, not close(), which would wait for the call's own lock."""
    sock = conn._sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


async def _in_thread(fn: Any, cancellation_token: CancellationToken | None) -> Any:
    """``fn()`` in a worker thread (a call holds its connection until its reply), cancelled with the token."""
    fut = asyncio.ensure_future(asyncio.to_thread(fn))
    if cancellation_token is not None:
        cancellation_token.link_future(fut)
    return await fut


def _cancel_stream(conn: CloveClient, stream_id: int, close: bool) -> None:
    try:
        conn.think_stream_cancel(stream_id, check=False)
    except Exception:  # noqa: BLE001 - a connection that is gone took its stream with it
        pass
    if close:
        conn.close()


def _tool_declaration(t: Tool | ToolSchema) -> dict[str, Any]:
    schema: Mapping[str, Any] = t.schema if isinstance(t, Tool) else t
    decl: dict[str, Any] = {"name": schema["name"]}
    if schema.get("description"):
        decl["description"] = schema["description"]
    decl["parameters"] = dict(schema.get("parameters") or {"type": "object", "properties": {}})
    return decl


class CloveChatCompletionClientConfig(BaseModel):
    """What :meth:`CloveChatCompletionClient.dump_component` saves."""

    model: str | None = None
    provider: str | None = None
    socket_path: str | None = None
    timeout: float | None = 600.0
    temperature: float | None = None
    max_tokens: int | None = None
    thinking_level: Literal["LOW", "MEDIUM", "HIGH"] | None = None
    context_window: int = 32768
    model_info: ModelInfo | None = None


class CloveChatCompletionClient(ChatCompletionClient, Component[CloveChatCompletionClientConfig]):
    """An AutoGen model client whose calls are THINKs of the Clove kernel.

    ``model`` and ``provider`` name the operator's model and provider (None: the operator's defaults).
    Each call opens its own connection to ``socket_path`` (default ``$CLOVE_SOCKET``), so calls run side by
    side and a cancelled one closes it, which makes the kernel drop the provider call; or pass ``client``
    to use one connection for every call (they then run one at a time).
    """

    component_type = "model"
    component_config_schema = CloveChatCompletionClientConfig
    component_provider_override = "clove_sdk.integrations.autogen.CloveChatCompletionClient"

    def __init__(
        self,
        model: str | None = None,
        *,
        provider: str | None = None,
        socket_path: str | None = None,
        client: CloveClient | None = None,
        timeout: float | None = 600.0,
        temperature: float | None = None,
        max_tokens: int | None = None,
        thinking_level: Literal["LOW", "MEDIUM", "HIGH"] | None = None,
        context_window: int = 32768,
        model_info: ModelInfo | None = None,
    ) -> None:
        self._config = CloveChatCompletionClientConfig(
            model=model,
            provider=provider,
            socket_path=socket_path,
            timeout=timeout,
            temperature=temperature,
            max_tokens=max_tokens,
            thinking_level=thinking_level,
            context_window=context_window,
            model_info=model_info,
        )
        self._client = client
        self._model_info = model_info or ModelInfo(
            vision=False,
            function_calling=True,
            json_output=False,
            family=ModelFamily.UNKNOWN,
            structured_output=False,
            multiple_system_messages=True,
        )
        validate_model_info(self._model_info)
        self._actual_usage = RequestUsage(prompt_tokens=0, completion_tokens=0)
        self._total_usage = RequestUsage(prompt_tokens=0, completion_tokens=0)

    # -- requests ---------------------------------------------------------------------------------------
    def _payload(
        self,
        messages: Sequence[LLMMessage],
        tools: Sequence[Tool | ToolSchema],
        tool_choice: Tool | Literal["auto", "required", "none"],
        json_output: bool | type[BaseModel] | None,
        extra_create_args: Mapping[str, Any],
    ) -> dict[str, Any]:
        if json_output:
            raise ValueError("CloveChatCompletionClient: THINK has no JSON mode or structured output (see model_info)")
        unknown = sorted(set(extra_create_args) - set(_EXTRA_ARGS))
        if unknown:
            raise ValueError(f"CloveChatCompletionClient: unknown create args {unknown}; THINK takes {_EXTRA_ARGS}")
        cfg = self._config
        payload: dict[str, Any] = {"messages": think_messages(messages)}
        for k, v in (
            ("model", cfg.model),
            ("provider", cfg.provider),
            ("temperature", cfg.temperature),
            ("max_tokens", cfg.max_tokens),
            ("thinking_level", cfg.thinking_level),
        ):
            if v is not None:
                payload[k] = v
        payload.update({k: v for k, v in extra_create_args.items() if v is not None})
        if tools:
            payload["tools"] = [_tool_declaration(t) for t in tools]
            if isinstance(tool_choice, Tool):
                payload["tool_choice"] = {"name": tool_choice.name}
            elif tool_choice != "auto":
                payload["tool_choice"] = tool_choice
        elif isinstance(tool_choice, Tool) or tool_choice == "required":
            raise ValueError("CloveChatCompletionClient: tool_choice needs tools")
        return payload

    def _connection(self) -> tuple[CloveClient, bool]:
        if self._client is not None:
            return self._client, False
        return CloveClient(self._config.socket_path, timeout=self._config.timeout), True

    def _result(self, reply: Mapping[str, Any], payload: Mapping[str, Any]) -> CreateResult:
        """THINK's reply as a CreateResult (tool calls as FunctionCalls), counted in the usage."""
        calls = reply.get("tool_calls") or []
        text = reply.get("content") or ""
        usage = RequestUsage(
            prompt_tokens=int(reply.get("input_tokens") or 0), completion_tokens=int(reply.get("output_tokens") or 0)
        )
        content: str | list[FunctionCall]
        if calls:
            content = [
                FunctionCall(
                    id=str(tc.get("id") or f"call_{i}"),
                    name=tc["name"],
                    arguments=a if isinstance(a := tc.get("arguments"), str) else json.dumps(a or {}),
                )
                for i, tc in enumerate(calls)
            ]
            finish = "function_calls"
        else:
            content = text
            finish = _FINISH.get(str(reply.get("finish_reason") or "stop"), "unknown")
        result = CreateResult(
            finish_reason=finish,  # type: ignore[arg-type]
            content=content,
            usage=usage,
            cached=False,
            thought=text if calls and text else None,
        )
        self._actual_usage = usage
        self._total_usage = RequestUsage(
            prompt_tokens=self._total_usage.prompt_tokens + usage.prompt_tokens,
            completion_tokens=self._total_usage.completion_tokens + usage.completion_tokens,
        )
        logger.info(
            LLMCallEvent(
                messages=list(payload.get("messages") or []),
                response=dict(reply),
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
            )
        )
        return result

    async def create(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> CreateResult:
        """One THINK, in a worker thread (it holds its connection until the answer is in)."""
        payload = self._payload(messages, tools, tool_choice, json_output, extra_create_args)
        conn, own = self._connection()
        if own and cancellation_token is not None:
            cancellation_token.add_callback(lambda: _hang_up(conn))
        try:
            reply = await _in_thread(lambda: conn.think(**payload, check=True), cancellation_token)
        finally:
            # a cancelled call's worker is still in it: the hung-up connection closes itself there
            if own and not (cancellation_token is not None and cancellation_token.is_cancelled()):
                conn.close()
        return self._result(reply, payload)

    async def create_stream(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> AsyncGenerator[str | CreateResult, None]:
        """THINK_STREAM: the answer's text as the kernel has it at each THINK_STREAM_NEXT, then the
        CreateResult (tool calls come whole, in it)."""
        payload = self._payload(messages, tools, tool_choice, json_output, extra_create_args)
        conn, own = self._connection()
        if own and cancellation_token is not None:
            cancellation_token.add_callback(lambda: _hang_up(conn))
        stream_id, done = None, False
        try:
            started = await _in_thread(lambda: conn.think_stream(**payload, check=True), cancellation_token)
            stream_id = started.stream_id
            while not done:
                step = await _in_thread(lambda: conn.think_stream_next(stream_id, 1.0, check=True), cancellation_token)
                for piece in step.get("deltas") or []:
                    if piece.get("content"):
                        yield piece["content"]
                done = bool(step.get("done"))
            reply = step.get("result") or {}
            if reply.get("success") is False:  # the provider failed after the stream began
                raise kernel_error(reply)
            yield self._result(reply, payload)
        finally:
            if own and cancellation_token is not None and cancellation_token.is_cancelled():
                pass  # hung up: the kernel ends the stream with the connection, which its worker closes
            elif stream_id is not None and not done:
                # stopped early or a step failed: the kernel stops the provider call (a worker may still
                # hold the connection in a step, so not on the event loop's thread)
                threading.Thread(target=_cancel_stream, args=(conn, stream_id, own), daemon=True).start()
            elif own:
                conn.close()

    # -- what AutoGen asks of a model client ------------------------------------------------------------
    async def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def actual_usage(self) -> RequestUsage:
        return self._actual_usage

    def total_usage(self) -> RequestUsage:
        return self._total_usage

    def count_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        """The kernel's own estimate: about 4 characters a token of what THINK would send."""
        text = json.dumps(think_messages(messages)) + json.dumps([_tool_declaration(t) for t in tools])
        return (len(text) + 3) // 4

    def remaining_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        return max(0, self._config.context_window - self.count_tokens(messages, tools=tools))

    @property
    def capabilities(self) -> Any:  # deprecated in AutoGen, still abstract
        return self._model_info

    @property
    def model_info(self) -> ModelInfo:
        return self._model_info

    def _to_config(self) -> CloveChatCompletionClientConfig:
        return self._config.model_copy()

    @classmethod
    def _from_config(cls, config: CloveChatCompletionClientConfig) -> Self:
        return cls(**config.model_dump())


# -- Clove syscalls as AutoGen tools ---------------------------------------------------------------------


class CloveTool(BaseTool[BaseModel, BaseModel]):
    """One Clove syscall as an AutoGen tool (see :func:`clove_tools`); its result is JSON text."""

    def __init__(self, spec_name: str, client: CloveClient) -> None:
        spec = TOOL_SPECS[spec_name]
        super().__init__(args_model(spec), str, spec.name, spec.description)  # type: ignore[arg-type]
        self._spec = spec
        self._clove = client

    async def run(self, args: BaseModel, cancellation_token: CancellationToken) -> Any:
        try:
            return await asyncio.to_thread(run_tool, self._spec, self._clove, args.model_dump())
        except ToolRefused as e:
            raise RuntimeError(str(e)) from e  # AgentChat hands it to the model as an error result


def clove_tools(
    client: CloveClient | None = None, include: list[str] | None = None, *, socket_path: str | None = None
) -> list[CloveTool]:
    """AutoGen tools for Clove's syscalls: ``clove_send``, ``clove_recv``, ``clove_store``, ``clove_fetch``,
    ``clove_http``, ``clove_exec``, ``clove_read``, ``clove_write``, or those ``include`` names (``"store"``
    or ``"clove_store"``). They share ``client`` if given, else one connection of their own."""
    names = tool_names(include)
    shared = client or CloveClient(socket_path, timeout=60.0)
    return [CloveTool(n, shared) for n in names]


# -- agents in their own processes -----------------------------------------------------------------------

#: the kinds of call a :class:`CloveRemoteAgent` sends and :func:`serve_agent` answers
MESSAGES_KIND = "autogen.messages"
RESET_KIND = "autogen.reset"
SAVE_KIND = "autogen.save_state"
LOAD_KIND = "autogen.load_state"


def _factory(custom: Sequence[type[BaseAgentEvent | BaseChatMessage]]) -> MessageFactory:
    f = MessageFactory()
    for t in custom:
        if not f.is_registered(t):
            f.register(t)
    return f


class CloveRemoteAgent(BaseChatAgent):
    """An AgentChat agent that is served by another Clove agent (:func:`serve_agent`), named ``remote``
    (default: ``name``). Each turn's new messages go to it through the kernel; its response (and inner
    messages) come back as this agent's. ``timeout`` (seconds, None: no limit) bounds one turn."""

    def __init__(
        self,
        name: str,
        remote: str | None = None,
        description: str = "An agent that runs in its own Clove agent process.",
        *,
        caller: Caller | None = None,
        socket_path: str | None = None,
        timeout: float | None = None,
        produced_message_types: Sequence[type[BaseChatMessage]] = (TextMessage,),
        custom_message_types: Sequence[type[BaseAgentEvent | BaseChatMessage]] = (),
    ) -> None:
        super().__init__(name, description)
        self.remote = remote or name
        self._caller = caller
        self._socket_path = socket_path
        self._timeout = timeout
        self._produced = tuple(produced_message_types)
        self._factory = _factory(custom_message_types)

    @property
    def produced_message_types(self) -> Sequence[type[BaseChatMessage]]:
        return self._produced

    async def _call(self, kind: str, body: Any, cancellation_token: CancellationToken | None = None) -> Any:
        caller = self._caller or shared_caller(self._socket_path)
        fut = asyncio.ensure_future(asyncio.to_thread(caller.call, self.remote, kind, body, timeout=self._timeout))
        if cancellation_token is not None:
            cancellation_token.link_future(fut)
        return await fut

    async def on_messages(self, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken) -> Response:
        out = await self._call(MESSAGES_KIND, {"messages": [m.dump() for m in messages]}, cancellation_token)
        if not isinstance(out, dict) or "chat_message" not in out:
            raise RemoteCallError(f"{self.remote!r} answered a turn with {out!r}")
        chat = self._factory.create(out["chat_message"])
        if not isinstance(chat, BaseChatMessage):
            raise RemoteCallError(f"{self.remote!r} answered with a {type(chat).__name__}, not a chat message")
        inner = [self._factory.create(m) for m in out.get("inner_messages") or []]
        return Response(chat_message=chat, inner_messages=inner or None)

    async def on_reset(self, cancellation_token: CancellationToken) -> None:
        await self._call(RESET_KIND, None, cancellation_token)

    async def save_state(self) -> Mapping[str, Any]:
        return await self._call(SAVE_KIND, None)

    async def load_state(self, state: Mapping[str, Any]) -> None:
        await self._call(LOAD_KIND, dict(state))


def _json_state(state: Any) -> Any:
    return json.loads(json.dumps(state, default=str))


def serve_agent(
    agent: BaseChatAgent,
    *,
    client: CloveClient | None = None,
    key: str = "clove.autogen.agent",
    custom_message_types: Sequence[type[BaseAgentEvent | BaseChatMessage]] = (),
    stop: Any = None,
) -> None:
    """Runs ``agent`` in this Clove agent process for the :class:`CloveRemoteAgent` s that name it: each
    turn runs ``agent.on_messages`` on the messages sent, and the answer goes back with the agent's state
    checkpointed (agent scope, ``key``), which a restarted process loads before its first turn. Returns
    when ``stop()`` is true or the connection to the kernel ends."""
    loop = asyncio.new_event_loop()
    factory = _factory(custom_message_types)

    def snapshot() -> Any:
        return _json_state(loop.run_until_complete(agent.save_state()))

    def restore(state: Any) -> None:
        loop.run_until_complete(agent.load_state(state))

    def handle(kind: str, body: Any) -> Any:
        if kind == MESSAGES_KIND:
            if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
                raise ValueError("serve_agent: a turn needs messages")
            msgs = [factory.create(d) for d in body["messages"]]
            if not all(isinstance(m, BaseChatMessage) for m in msgs):
                raise ValueError("serve_agent: a turn takes chat messages only")
            resp = loop.run_until_complete(agent.on_messages(msgs, CancellationToken()))  # type: ignore[arg-type]
            return {
                "chat_message": resp.chat_message.dump(),
                "inner_messages": [m.dump() for m in resp.inner_messages or []],
            }
        if kind == RESET_KIND:
            loop.run_until_complete(agent.on_reset(CancellationToken()))
            return None
        if kind == SAVE_KIND:
            return snapshot()
        if kind == LOAD_KIND:
            restore(body)
            return None
        raise ValueError(f"serve_agent: unknown call {kind!r}")

    try:
        serve(handle, client=client, key=key, snapshot=snapshot, restore=restore, stop=stop)
    finally:
        loop.close()
