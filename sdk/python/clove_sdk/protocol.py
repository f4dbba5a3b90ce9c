"""Framing of the Clove wire protocol (docs/protocol.md §1) and its opcode table (§3).

A frame is a packed 17-byte little-endian header followed by the payload::

    offset 0  u32  magic         0x41474E54 (bytes 54 4E 47 41)
    offset 4  u32  agent_id      ignored by the kernel on input; the caller's id on output
    offset 8  u8   opcode
    offset 9  u64  payload_size
    offset 17 ...  payload       UTF-8 JSON for every opcode but NOOP
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from .errors import BadMagicError, PayloadTooLargeError, ProtocolError

__all__ = [
    "MAGIC",
    "MAGIC_BYTES",
    "HEADER_SIZE",
    "DEFAULT_MAX_PAYLOAD",
    "MAX_PAYLOAD_SIZE",
    "PROTOCOL_VERSION",
    "SyscallOp",
    "Op",
    "op_name",
    "Frame",
    "Message",
    "encode_frame",
    "FrameDecoder",
]

MAGIC = 0x41474E54
MAGIC_BYTES = MAGIC  # name used by the public SDK
HEADER_SIZE = 17
DEFAULT_MAX_PAYLOAD = 1024 * 1024
MAX_PAYLOAD_SIZE = DEFAULT_MAX_PAYLOAD  # name used by the public SDK
PROTOCOL_VERSION = 1

_HEADER = struct.Struct("<IIBQ")
_MAGIC_WIRE = struct.pack("<I", MAGIC)


class SyscallOp(IntEnum):
    """Opcodes. The ``SYS_``-prefixed names are those of the public SDK; the plain names (the kernel's
    log names, e.g. ``SyscallOp.SEND``) are aliases of the same members."""

    SYS_NOOP = 0x00
    SYS_THINK = 0x01
    SYS_EXEC = 0x02
    SYS_READ = 0x03
    SYS_WRITE = 0x04
    SYS_SPAWN = 0x10
    SYS_KILL = 0x11
    SYS_LIST = 0x12
    SYS_PAUSE = 0x14
    SYS_RESUME = 0x15
    SYS_SEND = 0x20
    SYS_RECV = 0x21
    SYS_BROADCAST = 0x22
    SYS_REGISTER = 0x23
    SYS_STORE = 0x30
    SYS_FETCH = 0x31
    SYS_DELETE = 0x32
    SYS_KEYS = 0x33
    SYS_GET_PERMS = 0x40
    SYS_SET_PERMS = 0x41
    SYS_HTTP = 0x50
    SYS_SUBSCRIBE = 0x60
    SYS_UNSUBSCRIBE = 0x61
    SYS_POLL_EVENTS = 0x62
    SYS_EMIT = 0x63
    SYS_RECORD_START = 0x70
    SYS_RECORD_STOP = 0x71
    SYS_RECORD_STATUS = 0x72
    SYS_REPLAY_START = 0x73
    SYS_REPLAY_STATUS = 0x74
    SYS_GET_AUDIT_LOG = 0x76
    SYS_SET_AUDIT_CONFIG = 0x77
    SYS_ASYNC_POLL = 0x80
    SYS_WORLD_CREATE = 0xA0
    SYS_WORLD_DESTROY = 0xA1
    SYS_WORLD_LIST = 0xA2
    SYS_WORLD_JOIN = 0xA3
    SYS_WORLD_LEAVE = 0xA4
    SYS_WORLD_EVENT = 0xA5
    SYS_WORLD_STATE = 0xA6
    SYS_WORLD_SNAPSHOT = 0xA7
    SYS_WORLD_RESTORE = 0xA8
    SYS_TUNNEL_CONNECT = 0xB0
    SYS_TUNNEL_DISCONNECT = 0xB1
    SYS_TUNNEL_STATUS = 0xB2
    SYS_TUNNEL_LIST_REMOTES = 0xB3
    SYS_TUNNEL_CONFIG = 0xB4
    SYS_METRICS_SYSTEM = 0xC0
    SYS_METRICS_AGENT = 0xC1
    SYS_METRICS_ALL_AGENTS = 0xC2
    SYS_METRICS_CGROUP = 0xC3
    SYS_HEARTBEAT = 0xD0  # Clove extension
    SYS_LLM_REPORT = 0xF0
    SYS_HELLO = 0xFE
    SYS_EXIT = 0xFF

    # plain names (aliases)
    NOOP = 0x00
    THINK = 0x01
    EXEC = 0x02
    READ = 0x03
    WRITE = 0x04
    SPAWN = 0x10
    KILL = 0x11
    LIST = 0x12
    PAUSE = 0x14
    RESUME = 0x15
    SEND = 0x20
    RECV = 0x21
    BROADCAST = 0x22
    REGISTER = 0x23
    STORE = 0x30
    FETCH = 0x31
    DELETE = 0x32
    KEYS = 0x33
    GET_PERMS = 0x40
    SET_PERMS = 0x41
    HTTP = 0x50
    SUBSCRIBE = 0x60
    UNSUBSCRIBE = 0x61
    POLL_EVENTS = 0x62
    EMIT = 0x63
    RECORD_START = 0x70
    RECORD_STOP = 0x71
    RECORD_STATUS = 0x72
    REPLAY_START = 0x73
    REPLAY_STATUS = 0x74
    GET_AUDIT_LOG = 0x76
    SET_AUDIT_CONFIG = 0x77
    ASYNC_POLL = 0x80
    WORLD_CREATE = 0xA0
    WORLD_DESTROY = 0xA1
    WORLD_LIST = 0xA2
    WORLD_JOIN = 0xA3
    WORLD_LEAVE = 0xA4
    WORLD_EVENT = 0xA5
    WORLD_STATE = 0xA6
    WORLD_SNAPSHOT = 0xA7
    WORLD_RESTORE = 0xA8
    TUNNEL_CONNECT = 0xB0
    TUNNEL_DISCONNECT = 0xB1
    TUNNEL_STATUS = 0xB2
    TUNNEL_LIST_REMOTES = 0xB3
    TUNNEL_CONFIG = 0xB4
    METRICS_SYSTEM = 0xC0
    METRICS_AGENT = 0xC1
    METRICS_ALL_AGENTS = 0xC2
    METRICS_CGROUP = 0xC3
    HEARTBEAT = 0xD0
    LLM_REPORT = 0xF0
    HELLO = 0xFE
    EXIT = 0xFF

    @property
    def log_name(self) -> str:
        """The name without the ``SYS_`` prefix, as the kernel logs it."""
        return self.name[4:]


Op = SyscallOp


def op_name(opcode: int) -> str:
    """The log name of an opcode byte (``"SEND"``), or ``"UNKNOWN"`` if it is not in the table."""
    try:
        return SyscallOp(opcode).log_name
    except ValueError:
        return "UNKNOWN"


@dataclass(frozen=True)
class Frame:
    """One decoded frame. ``opcode`` is the raw byte (it may be outside the table)."""

    agent_id: int
    opcode: int
    payload: bytes

    @property
    def op(self) -> SyscallOp | None:
        try:
            return SyscallOp(self.opcode)
        except ValueError:
            return None

    @property
    def payload_str(self) -> str:
        return self.payload.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The payload parsed as JSON (raises ``ValueError`` if it is not JSON)."""
        return json.loads(self.payload.decode("utf-8"))

    def serialize(self) -> bytes:
        return encode_frame(self.opcode, self.payload, agent_id=self.agent_id)


Message = Frame  # name used by the public SDK


def _payload_bytes(payload: bytes | bytearray | memoryview | str | None) -> bytes:
    if payload is None:
        return b""
    if isinstance(payload, str):
        return payload.encode("utf-8")
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return bytes(payload)
    raise TypeError(f"payload must be bytes or str, not {type(payload).__name__}")


def encode_frame(
    opcode: int,
    payload: bytes | bytearray | memoryview | str | None = b"",
    agent_id: int = 0,
    *,
    max_payload: int | None = None,
) -> bytes:
    """Encodes one frame. A ``str`` payload is sent as UTF-8 (the size counts bytes).

    With ``max_payload`` set, a larger payload raises :class:`PayloadTooLargeError` instead of
    producing a frame the kernel would reject (and close the connection for)."""
    body = _payload_bytes(payload)
    if not 0 <= int(opcode) <= 0xFF:
        raise ValueError(f"opcode out of range: {opcode}")
    if not 0 <= int(agent_id) <= 0xFFFFFFFF:
        raise ValueError(f"agent_id out of range: {agent_id}")
    if max_payload is not None and len(body) > max_payload:
        raise PayloadTooLargeError(
            f"payload of {len(body)} bytes is over the limit of {max_payload}", opcode=int(opcode)
        )
    return _HEADER.pack(MAGIC, int(agent_id), int(opcode), len(body)) + body


class FrameDecoder:
    """Streaming decoder.

    ``feed(chunk)`` returns every frame completed by ``chunk`` (there may be none, one or many) and
    keeps only the unfinished tail — at most one partial frame, never more than ``HEADER_SIZE +
    max_payload`` bytes. A bad magic is reported as soon as the first differing byte arrives and an
    oversized ``payload_size`` as soon as the header is complete, by raising
    :class:`BadMagicError` / :class:`PayloadTooLargeError`; the exception's ``frames`` holds the frames
    decoded from the same chunk before the error. After an error the decoder is failed: every further
    ``feed`` raises the same error again.
    """

    def __init__(self, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        if max_payload < 0:
            raise ValueError("max_payload must be >= 0")
        self.max_payload = max_payload
        self._buf = bytearray()
        self._need: int | None = None  # total size of the frame being assembled, once known
        self.error: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held for the frame being assembled."""
        return len(self._buf)

    def reset(self) -> None:
        self._buf.clear()
        self._need = None
        self.error = None

    def _fail(self, err: ProtocolError, frames: list[Frame]) -> ProtocolError:
        err.frames = frames
        self.error = err
        self._buf.clear()
        self._need = None
        return err

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        if self.error is not None:
            raise type(self.error)(str(self.error), opcode=self.error.opcode)
        frames: list[Frame] = []
        view = memoryview(data).cast("B") if not isinstance(data, memoryview) else data.cast("B")
        pos, end = 0, len(view)
        buf = self._buf
        while pos < end:
            if self._need is None:
                # assembling a header
                take = min(HEADER_SIZE - len(buf), end - pos)
                start = len(buf)
                buf += view[pos : pos + take]
                pos += take
                if start < 4:
                    upto = min(len(buf), 4)
                    if buf[:upto] != _MAGIC_WIRE[:upto]:
                        (magic,) = struct.unpack("<I", bytes(buf[:4]).ljust(4, b"\0"))
                        raise self._fail(
                            BadMagicError(f"bad magic 0x{magic:08x} (expected 0x{MAGIC:08x})"), frames
                        )
                if len(buf) < HEADER_SIZE:
                    break
                _, _, opcode, size = _HEADER.unpack(buf)
                if size > self.max_payload:
                    raise self._fail(
                        PayloadTooLargeError(
                            f"payload_size {size} is over the limit of {self.max_payload}", opcode=opcode
                        ),
                        frames,
                    )
                self._need = HEADER_SIZE + size
            # assembling a payload
            take = min(self._need - len(buf), end - pos)
            if take:
                buf += view[pos : pos + take]
                pos += take
            if len(buf) < self._need:
                break
            _, agent_id, opcode, _ = _HEADER.unpack_from(buf)
            frames.append(Frame(agent_id, opcode, bytes(buf[HEADER_SIZE:])))
            buf.clear()
            self._need = None
        return frames

    def __repr__(self) -> str:
        return f"FrameDecoder(max_payload={self.max_payload}, buffered={len(self._buf)})"
