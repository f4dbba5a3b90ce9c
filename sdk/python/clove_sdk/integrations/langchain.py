"""LangChain and LangGraph on Clove (``pip install clove-sdk[langchain]``).

Three pieces, each going through the kernel, so the calling agent's rights, quotas and audit apply:

- :class:`ChatClove`, a LangChain chat model whose calls are THINK syscalls: the kernel calls the
  operator's provider (the agent never holds a key), counts the provider's tokens against the agent,
  and passes tools and tool calls through;
- :func:`clove_tools`, Clove syscalls (send, recv, store, fetch, http, exec, read, write) as LangChain
  tools; a refusal of the kernel becomes the tool's error message to the model, not a crash;
- :class:`CloveCheckpointSaver`, a LangGraph checkpointer on the kernel's state store: agent-scope keys
  outlive the agent's restarts, so a graph killed mid-run resumes from its last checkpoint.

Each takes a :class:`~clove_sdk.CloveClient`, or connects as ``CloveClient()`` does (``$CLOVE_SOCKET``,
which the kernel sets for its agents). This module imports langchain-core and langgraph; ``import
clove_sdk`` does not import it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from typing import Any, Literal
from urllib.parse import quote, unquote

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import LanguageModelInput
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.messages.tool import invalid_tool_call, tool_call, tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.tools import BaseTool, StructuredTool, ToolException
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    SerializerProtocol,
    get_checkpoint_id,
    get_checkpoint_metadata,
    writes_sort_key,
)
from pydantic import BaseModel, Field, PrivateAttr

from ..client import CloveClient
from ..protocol import SyscallOp

__all__ = ["ChatClove", "CloveCheckpointSaver", "clove_tools", "TOOL_NAMES"]


# ---------------------------------------------------------------------------------------------- model

# per-call options of THINK that ChatClove takes as fields and as call or bind() arguments
_THINK_OPTIONS = ("model", "provider", "temperature", "max_tokens", "thinking_level")
# content blocks of an AI message that THINK carries elsewhere (tool_calls) or not at all
_AI_BLOCKS_SKIPPED = frozenset({"tool_use", "tool_call", "tool_call_chunk", "reasoning", "thinking"})
_CHAT_ROLES = {"system": "system", "user": "user", "human": "user", "assistant": "assistant", "ai": "assistant"}


def _text(content: str | list, what: str, skip: frozenset[str] = frozenset()) -> str:
    """A message's content as THINK's text: text blocks joined; other blocks are refused by name, since
    dropping them silently would change what the model is asked."""
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
        elif isinstance(block, dict) and block.get("type") in skip:
            continue
        else:
            kind = block.get("type") if isinstance(block, dict) else type(block).__name__
            raise ValueError(f"ChatClove: {what} has a {kind!r} content block; THINK messages take text only")
    return "".join(parts)


def _think_message(m: BaseMessage) -> dict[str, Any]:
    """One LangChain message as a THINK ``messages`` item."""
    if isinstance(m, SystemMessage):
        return {"role": "system", "content": _text(m.content, "a system message")}
    if isinstance(m, HumanMessage):
        return {"role": "user", "content": _text(m.content, "a human message")}
    if isinstance(m, AIMessage):
        out: dict[str, Any] = {"role": "assistant", "content": _text(m.content, "an AI message", _AI_BLOCKS_SKIPPED)}
        if m.tool_calls:
            out["tool_calls"] = [
                {**({"id": tc["id"]} if tc.get("id") else {}), "name": tc["name"], "arguments": tc["args"]}
                for tc in m.tool_calls
            ]
        return out
    if isinstance(m, ToolMessage):
        out = {"role": "tool", "content": _text(m.content, "a tool message"), "tool_call_id": m.tool_call_id}
        if m.name:
            out["name"] = m.name
        return out
    if isinstance(m, ChatMessage):
        role = _CHAT_ROLES.get(m.role)
        if role is None:
            raise ValueError(f"ChatClove: a chat message's role {m.role!r} is none of {sorted(_CHAT_ROLES)}")
        return {"role": role, "content": _text(m.content, f"a {m.role} message")}
    raise ValueError(f"ChatClove: a {type(m).__name__} has no THINK equivalent")


def _tool_names(tools: Sequence[dict[str, Any]]) -> list[str]:
    return [t["function"]["name"] if "function" in t else t.get("name", "") for t in tools]


def _tool_choice(choice: Any, tools: Sequence[dict[str, Any]]) -> str | dict[str, str] | None:
    """LangChain's tool_choice forms as THINK's: ``auto``/``none``/``required`` or ``{name}``."""
    names = _tool_names(tools)
    if choice is None or choice is False:
        return None
    if choice in ("auto", "none", "required"):
        return choice
    if choice == "any":
        return "required"
    if choice is True:
        if len(names) != 1:
            raise ValueError(f"ChatClove: tool_choice=True needs exactly one bound tool, not {len(names)}")
        return {"name": names[0]}
    if isinstance(choice, str):
        if choice not in names:
            raise ValueError(f"ChatClove: tool_choice {choice!r} is none of the bound tools {names}")
        return {"name": choice}
    if isinstance(choice, dict):
        name = choice.get("name") or (choice.get("function") or {}).get("name")
        if isinstance(name, str) and name:
            return {"name": name}
    raise ValueError(f"ChatClove: tool_choice {choice!r} is not auto, none, required/any, a tool name or True")


def _usage(reply: dict[str, Any]) -> UsageMetadata:
    """The kernel's token counts (the provider's own figures) as LangChain's usage metadata."""
    inp, out = int(reply.get("input_tokens") or 0), int(reply.get("output_tokens") or 0)
    return UsageMetadata(input_tokens=inp, output_tokens=out, total_tokens=int(reply.get("tokens") or inp + out))


def _response_metadata(reply: dict[str, Any]) -> dict[str, Any]:
    meta = {k: reply[k] for k in ("provider", "finish_reason", "usage_estimated") if k in reply}
    if "model" in reply:
        meta["model_name"] = reply["model"]
    return meta


def _call_id(tc: dict[str, Any]) -> str:
    # a provider that gives no ids (Gemini) still needs one: a ToolMessage answers a call by its id
    return str(tc.get("id") or f"call_{uuid.uuid4().hex[:24]}")


def _ai_message(reply: dict[str, Any]) -> AIMessage:
    """A THINK reply as an AIMessage: its text, tool calls (arguments that are not a JSON object become
    invalid tool calls, which LangChain reports to the model), usage and metadata."""
    calls, invalid = [], []
    for tc in reply.get("tool_calls") or []:
        args = tc.get("arguments")
        if args is None:
            args = {}
        if isinstance(args, dict):
            calls.append(tool_call(name=tc.get("name", ""), args=args, id=_call_id(tc)))
        else:
            text = args if isinstance(args, str) else json.dumps(args)
            invalid.append(
                invalid_tool_call(
                    name=tc.get("name"), args=text, id=_call_id(tc), error="the arguments are not a JSON object"
                )
            )
    return AIMessage(
        content=reply.get("content") or "",
        tool_calls=calls,
        invalid_tool_calls=invalid,
        usage_metadata=_usage(reply),
        response_metadata=_response_metadata(reply),
    )


class ChatClove(BaseChatModel):
    """A LangChain chat model whose every call is a THINK syscall.

    The kernel calls the operator's configured provider for the calling agent, with the operator's keys,
    schedules it fairly among agents and counts the provider's tokens against the agent's quota; the
    reply's counts become ``usage_metadata``. ``bind_tools`` passes tools to THINK (``tools``,
    ``tool_choice``); tool calls come back as ``AIMessage.tool_calls`` and ToolMessages go back as THINK
    ``tool`` messages. Streaming uses THINK_STREAM. The async methods run the blocking calls in an
    executor (LangChain's default for ``_agenerate``/``_astream``).

    ``client``: a :class:`~clove_sdk.CloveClient`; default one connected as ``CloveClient()`` does
    (``$CLOVE_SOCKET``). Kernel refusals (quota, rights) raise :class:`~clove_sdk.KernelError`.
    """

    client: CloveClient | None = Field(default=None, exclude=True)
    #: the model to ask for; default the provider's ``default_model``
    model: str | None = None
    #: a provider's name in the operator's configuration; default the one serving ``model``
    provider: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    thinking_level: Literal["LOW", "MEDIUM", "HIGH"] | None = None

    _own_client: CloveClient | None = PrivateAttr(default=None)
    _client_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    def _llm_type(self) -> str:
        return "clove"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in _THINK_OPTIONS if getattr(self, k) is not None}

    def _client(self) -> CloveClient:
        """The given client, else one of our own, made once (connects on its first call)."""
        if self.client is not None:
            return self.client
        with self._client_lock:
            if self._own_client is None:
                self._own_client = CloveClient()
            return self._own_client

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | dict | bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Tools (LangChain tools, functions, pydantic models or OpenAI tool dicts) for THINK's ``tools``;
        ``tool_choice``: ``auto``, ``none``, ``required``/``any``, a tool's name, or True (the only tool)."""
        formatted = [convert_to_openai_tool(t) for t in tools]
        _tool_choice(tool_choice, formatted)  # a bad choice fails here, not at the first call
        extra = {} if tool_choice is None else {"tool_choice": tool_choice}
        return self.bind(tools=formatted, **extra, **kwargs)

    def _request(self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]) -> dict:
        """The THINK request for a call: the messages, the model's options (a call's own win), tools."""
        if stop:
            raise ValueError("ChatClove: THINK has no stop sequences (stop=...)")
        kwargs = dict(kwargs)
        kwargs.pop("stream", None)  # LangChain's own switch, decided before we are called
        req: dict[str, Any] = {"messages": [_think_message(m) for m in messages]}
        for k in _THINK_OPTIONS:
            v = kwargs.pop(k, getattr(self, k))
            if v is not None:
                req[k] = v
        tools = kwargs.pop("tools", None)
        if tools:
            req["tools"] = [convert_to_openai_tool(t) for t in tools]
        choice = _tool_choice(kwargs.pop("tool_choice", None), req.get("tools", []))
        if choice is not None:
            req["tool_choice"] = choice
        if kwargs:
            raise TypeError(f"ChatClove: unknown call arguments {sorted(kwargs)}")
        return req

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        reply = self._client().think(**self._request(messages, stop, kwargs), check=True)
        return ChatResult(generations=[ChatGeneration(message=_ai_message(reply))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        """THINK_STREAM: a chunk per delta (text, or a piece of a tool call), then a last chunk with the
        kernel's token counts. LangChain reports each chunk to the callbacks and merges them."""
        ids: dict[int, bool] = {}
        # leaving early (the consumer stops iterating) cancels the stream: the kernel aborts the call
        with self._client().think_stream(**self._request(messages, stop, kwargs), check=True) as stream:
            for delta in stream:
                if delta.get("content"):
                    yield ChatGenerationChunk(message=AIMessageChunk(content=delta["content"]))
                tc = delta.get("tool_call")
                if tc:
                    index = int(tc.get("index", 0))
                    ids[index] = ids.get(index, False) or bool(tc.get("id"))
                    piece = tool_call_chunk(
                        name=tc.get("name"), args=tc.get("arguments"), id=tc.get("id"), index=index
                    )
                    yield ChatGenerationChunk(message=AIMessageChunk(content="", tool_call_chunks=[piece]))
            reply = stream.result or {}
        calls = reply.get("tool_calls") or []
        # calls whose pieces carried no id get the reply's (or a fresh one): ToolMessages answer by id
        missing = [tool_call_chunk(id=_call_id(calls[i] if i < len(calls) else {}), index=i) for i in ids if not ids[i]]
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                tool_call_chunks=missing,
                usage_metadata=_usage(reply),
                response_metadata=_response_metadata(reply),
                chunk_position="last",
            )
        )


# ---------------------------------------------------------------------------------------------- tools


class _SendArgs(BaseModel):
    to: str | int = Field(description="the recipient: an agent's name, or its numeric id")
    message: Any = Field(description="the message: any JSON value")


class _RecvArgs(BaseModel):
    max_messages: int = Field(default=10, ge=0, le=10000, description="most messages to take")
    wait_s: float = Field(default=0, ge=0, le=300, description="seconds to wait for a first message; 0: don't")


class _StoreArgs(BaseModel):
    key: str = Field(description="the key")
    value: Any = Field(description="any JSON value")
    scope: Literal["global", "agent", "session"] = Field(
        default="global",
        description="global: readable by all; agent: private to this agent, across its restarts; "
        "session: readable by all until the kernel restarts",
    )
    ttl: float | None = Field(default=None, gt=0, description="seconds until the key expires; default never")


class _FetchArgs(BaseModel):
    key: str = Field(description="the key")
    scope: Literal["global", "agent", "session"] | None = Field(
        default=None, description="where to look; default this agent's keys first, then global/session"
    )


class _HttpArgs(BaseModel):
    url: str = Field(description="an http or https URL")
    method: str = Field(default="GET", description="the HTTP method")
    headers: dict[str, str] | None = Field(default=None, description="request headers")
    body: str | None = Field(default=None, description="the request body")
    timeout: int = Field(default=30, ge=1, le=300, description="seconds")


class _ExecArgs(BaseModel):
    command: str = Field(description="the command line")
    cwd: str | None = Field(default=None, description="working directory; default this agent's")
    timeout: int = Field(default=30, ge=1, le=3600, description="seconds")


class _ReadArgs(BaseModel):
    path: str = Field(description="absolute, or relative to this agent's work directory")


class _WriteArgs(BaseModel):
    path: str = Field(description="absolute, or relative to this agent's work directory")
    content: str = Field(description="the text to write")
    mode: Literal["write", "append"] = Field(default="write", description="write replaces the file; append appends")


def _tool_table(c: CloveClient) -> dict[str, tuple[type[BaseModel], str, Callable[..., Any]]]:
    """name → (arguments, description, the syscall): one kernel call each, with the agent's rights; error
    replies come back as replies (``check=False``), even from a strict client."""
    return {
        "send": (
            _SendArgs,
            "Send a message to another agent (by name or id) through the Clove kernel.",
            lambda to, message: c.send_message(message, to=to, check=False),
        ),
        "recv": (
            _RecvArgs,
            "Take messages from this agent's mailbox: each with from, from_name and message.",
            lambda max_messages=10, wait_s=0: c.recv_messages(max_messages, wait_s or None, check=False),
        ),
        "store": (
            _StoreArgs,
            "Store a JSON value under a key in the kernel's durable key-value store.",
            lambda key, value, scope="global", ttl=None: c.store(key, value, scope, ttl, check=False),
        ),
        "fetch": (
            _FetchArgs,
            "Fetch the value of a key from the kernel's key-value store (exists, value).",
            lambda key, scope=None: c.fetch(key, scope, check=False),
        ),
        "http": (
            _HttpArgs,
            "Make an HTTP request through the kernel (status_code, headers, body).",
            lambda url, method="GET", headers=None, body=None, timeout=30: c.http(
                url, method, headers, body, timeout, check=False
            ),
        ),
        "exec": (
            _ExecArgs,
            "Run a command through the kernel, sandboxed (stdout, stderr, exit_code).",
            lambda command, cwd=None, timeout=30: c.exec(command, cwd, timeout, check=False),
        ),
        "read": (
            _ReadArgs,
            "Read a text file through the kernel (content, size).",
            lambda path: c.read_file(path, check=False),
        ),
        "write": (
            _WriteArgs,
            "Write (or append to) a text file through the kernel.",
            lambda path, content, mode="write": c.write_file(path, content, mode, check=False),
        ),
    }


#: the short names :func:`clove_tools` takes in ``include``; each tool is named ``clove_<name>``
TOOL_NAMES = ("send", "recv", "store", "fetch", "http", "exec", "read", "write")


def _as_tool_result(name: str, syscall: Callable[..., Any]) -> Callable[..., Any]:
    """Wraps a syscall so that the kernel's refusal is a ToolException (the model reads it in the
    ToolMessage, marked an error) and a reply is handed over without ``success``."""

    def run(**kwargs: Any) -> Any:
        reply = syscall(**kwargs)
        if isinstance(reply, dict) and reply.get("success") is False and reply.get("code"):
            raise ToolException(f"{name}: the kernel refused: {reply.get('error')} [{reply['code']}]")
        return {k: v for k, v in reply.items() if k != "success"} if isinstance(reply, dict) else reply

    return run


def clove_tools(client: CloveClient | None = None, include: Iterable[str] | None = None) -> list[BaseTool]:
    """Clove syscalls as LangChain tools (``clove_send``, ``clove_exec``, …), made with ``client``
    (default ``CloveClient()``). ``include``: a subset of :data:`TOOL_NAMES`, default all. Each call is a
    syscall of whoever holds the client, checked against its rights; a refusal comes back to the model
    as the tool's error message (``ToolMessage(status="error")``)."""
    c = client if client is not None else CloveClient()
    table = _tool_table(c)
    names = list(TOOL_NAMES if include is None else include)
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f"clove_tools: unknown tools {unknown}; known: {list(TOOL_NAMES)}")
    tools: list[BaseTool] = []
    for n in names:
        schema, description, syscall = table[n]
        tools.append(
            StructuredTool.from_function(
                func=_as_tool_result(f"clove_{n}", syscall),
                name=f"clove_{n}",
                description=description,
                args_schema=schema,
                handle_tool_error=True,
            )
        )
    return tools


# ---------------------------------------------------------------------------------------------- saver


def _part(s: str) -> str:
    """A key component with no ``/`` in it (thread ids and namespaces are free text)."""
    return quote(str(s), safe="")


def _pack(typed: tuple[str, bytes]) -> list[str]:
    return [typed[0], base64.b64encode(typed[1]).decode("ascii")]


def _unpack(stored: Any) -> tuple[str, bytes]:
    return stored[0], base64.b64decode(stored[1])


class CloveCheckpointSaver(BaseCheckpointSaver[str]):
    """A LangGraph checkpointer on the Clove kernel's state store (STORE, FETCH, KEYS, DELETE).

    Keys live in ``scope`` — default ``agent``: private to the calling agent and kept across its restarts
    and the kernel's (they end with the agent's identity); ``global`` keeps them after the agent is gone
    (readable by all, writable by their owner). Under ``prefix``, per thread and namespace::

        <prefix>/c/<thread>/<ns>/<checkpoint id>              the checkpoint, its metadata, its parent
        <prefix>/b/<thread>/<ns>/<channel>/<version>          a channel's value at that version
        <prefix>/w/<thread>/<ns>/<checkpoint id>/<task>/<i>   a pending write
        <prefix>/h/<thread>/<ns>                              the latest checkpoint's id

    A checkpoint is stored after its channel values and before the head moves, so a process killed in
    between leaves the previous checkpoint the latest. Values are the saver's serde output (base64), so
    anything LangGraph can checkpoint is stored; each must fit one request (1 MiB). Every key counts
    against the agent's ``state_keys``/``state_bytes`` budgets. Run graphs with ``durability="sync"`` to
    have each step's checkpoint stored before the next step starts.
    """

    def __init__(
        self,
        client: CloveClient | None = None,
        *,
        scope: Literal["agent", "global", "session"] = "agent",
        prefix: str = "langgraph",
        serde: SerializerProtocol | None = None,
    ) -> None:
        super().__init__(serde=serde)
        if scope not in ("agent", "global", "session"):
            raise ValueError(f"CloveCheckpointSaver: scope {scope!r} is not agent, global or session")
        if not prefix:
            raise ValueError("CloveCheckpointSaver: prefix must not be empty")
        self.client = client if client is not None else CloveClient()
        self.scope = scope
        self.prefix = prefix

    # -- the store ---------------------------------------------------------------------------------
    def _key(self, kind: str, *parts: Any) -> str:
        return "/".join([self.prefix, kind, *(_part(p) for p in parts)])

    def _store(self, key: str, value: Any) -> None:
        self.client.store(key, value, self.scope, check=True)

    def _fetch(self, key: str) -> Any:
        r = self.client.fetch(key, self.scope, check=True)
        return r["value"] if r.get("exists") else None

    def _keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix`` (KEYS, page by page: list_keys has no ``after``)."""
        out: list[str] = []
        req: dict[str, Any] = {"prefix": prefix, "limit": 1000}
        while True:
            r = self.client.call_json(SyscallOp.SYS_KEYS, req, check=True)
            out += r["keys"]
            if not r.get("more") or not r["keys"]:
                return out
            req["after"] = r["keys"][-1]

    def _config(self, thread_id: str, ns: str, checkpoint_id: str) -> RunnableConfig:
        return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": checkpoint_id}}

    def _load(self, thread_id: str, ns: str, checkpoint_id: str, config: RunnableConfig | None = None):
        """The tuple of one stored checkpoint, or None: its channel values and pending writes with it."""
        saved = self._fetch(self._key("c", thread_id, ns, checkpoint_id))
        if saved is None:
            return None
        checkpoint: Checkpoint = self.serde.loads_typed(_unpack(saved["checkpoint"]))
        values: dict[str, Any] = {}
        for channel, version in checkpoint["channel_versions"].items():
            blob = self._fetch(self._key("b", thread_id, ns, channel, version))
            if blob is not None and blob[0] != "empty":
                values[channel] = self.serde.loads_typed(_unpack(blob))
        writes = []
        for key in self._keys(self._key("w", thread_id, ns, checkpoint_id) + "/"):
            w = self._fetch(key)
            if w is not None:
                writes.append((w["task_path"], w["task_id"], w["idx"], w["channel"], w["value"]))
        writes.sort(key=lambda w: writes_sort_key(w[0], w[1], w[2]))
        parent = saved.get("parent")
        return CheckpointTuple(
            config=config or self._config(thread_id, ns, checkpoint_id),
            checkpoint={**checkpoint, "channel_values": values},
            metadata=self.serde.loads_typed(_unpack(saved["metadata"])),
            parent_config=self._config(thread_id, ns, parent) if parent else None,
            pending_writes=[(t, ch, self.serde.loads_typed(_unpack(v))) for _, t, _, ch, v in writes],
        )

    # -- BaseCheckpointSaver -------------------------------------------------------------------------
    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint ``config`` names, or the thread's latest (its head) without a checkpoint_id."""
        conf = config["configurable"]
        thread_id, ns = str(conf["thread_id"]), conf.get("checkpoint_ns", "")
        checkpoint_id = get_checkpoint_id(config)
        if checkpoint_id:
            return self._load(thread_id, ns, checkpoint_id, config)
        head = self._fetch(self._key("h", thread_id, ns))
        return self._load(thread_id, ns, head) if head else None

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,  # noqa: A002 - LangGraph's name
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """Checkpoints, newest first: of ``config``'s thread (and namespace, and checkpoint_id, when it
        gives them), else of every thread; those before ``before``; whose metadata has ``filter``."""
        conf = (config or {}).get("configurable", {})
        prefix = self.prefix + "/c/"
        if "thread_id" in conf:
            prefix += _part(str(conf["thread_id"])) + "/"
            if conf.get("checkpoint_ns") is not None:
                prefix += _part(conf["checkpoint_ns"]) + "/"
        want_id = get_checkpoint_id(config) if config else None
        before_id = get_checkpoint_id(before) if before else None
        found = []
        for key in self._keys(prefix):
            parts = key[len(self.prefix) + 3 :].split("/")
            if len(parts) != 3:
                continue
            thread_id, ns, checkpoint_id = (unquote(p) for p in parts)
            if want_id and checkpoint_id != want_id:
                continue
            if before_id and checkpoint_id >= before_id:
                continue
            found.append((checkpoint_id, thread_id, ns))
        found.sort(reverse=True)
        for checkpoint_id, thread_id, ns in found:
            if limit is not None and limit <= 0:
                return
            t = self._load(thread_id, ns, checkpoint_id)
            if t is None:
                continue
            if filter and not all(t.metadata.get(k) == v for k, v in filter.items()):
                continue
            if limit is not None:
                limit -= 1
            yield t

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Stores the channels that changed, then the checkpoint, then moves the thread's head to it."""
        conf = config["configurable"]
        thread_id, ns = str(conf["thread_id"]), conf.get("checkpoint_ns", "")
        c = checkpoint.copy()
        values: dict[str, Any] = c.pop("channel_values")  # type: ignore[misc]
        for channel, version in new_versions.items():
            typed = self.serde.dumps_typed(values[channel]) if channel in values else ("empty", b"")
            self._store(self._key("b", thread_id, ns, channel, version), _pack(typed))
        self._store(
            self._key("c", thread_id, ns, checkpoint["id"]),
            {
                "checkpoint": _pack(self.serde.dumps_typed(c)),
                "metadata": _pack(self.serde.dumps_typed(get_checkpoint_metadata(config, metadata))),
                "parent": conf.get("checkpoint_id"),
            },
        )
        head_key = self._key("h", thread_id, ns)
        head = self._fetch(head_key)
        if head is None or checkpoint["id"] > head:
            self._store(head_key, checkpoint["id"])
        return self._config(thread_id, ns, checkpoint["id"])

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Stores a task's writes for a checkpoint; a regular write already stored is kept (as LangGraph's
        own savers do), special ones (errors, interrupts) replace theirs."""
        conf = config["configurable"]
        thread_id, ns, checkpoint_id = str(conf["thread_id"]), conf.get("checkpoint_ns", ""), conf["checkpoint_id"]
        base = self._key("w", thread_id, ns, checkpoint_id, task_id)
        for i, (channel, value) in enumerate(writes):
            idx = WRITES_IDX_MAP.get(channel, i)
            key = f"{base}/{idx}"
            if idx >= 0 and self._fetch(key) is not None:
                continue
            self._store(
                key,
                {
                    "task_id": task_id,
                    "task_path": task_path,
                    "idx": idx,
                    "channel": channel,
                    "value": _pack(self.serde.dumps_typed(value)),
                },
            )

    def delete_thread(self, thread_id: str) -> None:
        """Deletes every checkpoint, value and write of a thread."""
        for kind in ("h", "c", "b", "w"):
            for key in self._keys(self._key(kind, thread_id) + "/"):
                self.client.delete_key(key, self.scope, check=True)

    def get_next_version(self, current: str | None, channel: None) -> str:
        """Versions as LangGraph's own savers make them: a counter and a random part, so that two forks of
        a thread never store different values of a channel under one version."""
        n = 0 if current is None else current if isinstance(current, int) else int(str(current).split(".")[0])
        return f"{n + 1:032}.{random.random():016}"

    # -- async: the same calls, in a worker thread (the client is thread-safe) ----------------------
    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await asyncio.to_thread(self.get_tuple, config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,  # noqa: A002
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        found = await asyncio.to_thread(lambda: list(self.list(config, filter=filter, before=before, limit=limit)))
        for t in found:
            yield t

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await asyncio.to_thread(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await asyncio.to_thread(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await asyncio.to_thread(self.delete_thread, thread_id)

