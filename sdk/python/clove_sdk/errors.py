"""Exceptions of the Clove SDK: one class per condition.

Hierarchy::

    CloveError
    ├── ConnectionClosedError      (also a builtin ConnectionError)  socket closed / connect failed
    ├── TimeoutError               (also the builtin TimeoutError)   no reply within the client timeout
    ├── ProtocolError                                                 the byte stream cannot be trusted
    │   ├── BadMagicError              code "bad_magic"
    │   ├── PayloadTooLargeError       code "payload_too_large"
    │   └── UnexpectedReplyError       reply opcode or payload not what the request asked for
    └── KernelError(code, message)                                    an error reply from the kernel
        ├── InvalidRequestError        "invalid_request"
        ├── BadFrameError              "bad_frame"
        ├── UnknownOpcodeError         "unknown_opcode"
        ├── NotSupportedError          "not_supported"
        ├── PermissionDeniedError      "permission_denied"
        ├── NotFoundError              "not_found"
        ├── NameTakenError             "name_taken"
        ├── MailboxFullError           "mailbox_full"
        ├── InvalidStateError          "invalid_state"
        ├── SpawnFailedError           "spawn_failed"
        ├── StorageError               "storage_error"
        └── InternalError              "internal"

Transport errors (the first three branches) are always raised. Kernel error replies are returned as
dicts with ``success: False`` by default, as the public SDK does, and raised as ``KernelError``
subclasses with ``CloveClient(strict=True)`` or ``check=True`` on a call.
"""

from __future__ import annotations

import builtins
from typing import Any

__all__ = [
    "CloveError",
    "ConnectionClosedError",
    "TimeoutError",
    "ProtocolError",
    "BadMagicError",
    "PayloadTooLargeError",
    "UnexpectedReplyError",
    "KernelError",
    "InvalidRequestError",
    "BadFrameError",
    "UnknownOpcodeError",
    "NotSupportedError",
    "PermissionDeniedError",
    "NotFoundError",
    "NameTakenError",
    "MailboxFullError",
    "InvalidStateError",
    "SpawnFailedError",
    "StorageError",
    "InternalError",
    "KERNEL_ERRORS",
    "kernel_error",
]


class CloveError(Exception):
    """Base class of every exception the SDK raises."""


class ConnectionClosedError(CloveError, builtins.ConnectionError):
    """The connection to the kernel is closed (or could not be opened)."""


class TimeoutError(CloveError, builtins.TimeoutError):  # noqa: A001 - deliberate, subclasses the builtin
    """No reply arrived within the client's timeout. The connection is closed, since a late reply
    would otherwise be taken as the answer to the next request."""


class ProtocolError(CloveError):
    """A framing error: the stream cannot be trusted past this point.

    ``code`` is the machine code (``bad_magic``, ``payload_too_large``, ...). ``frames`` holds the
    frames a decoder produced from the same chunk before it met the error."""

    code = "protocol_error"

    def __init__(self, message: str, *, frames: list | None = None, opcode: int | None = None) -> None:
        super().__init__(message)
        self.frames = list(frames or [])
        self.opcode = opcode


class BadMagicError(ProtocolError):
    code = "bad_magic"


class PayloadTooLargeError(ProtocolError):
    code = "payload_too_large"


class UnexpectedReplyError(ProtocolError):
    code = "unexpected_reply"


class KernelError(CloveError):
    """An error reply of the kernel: ``code`` is its stable machine code, ``message`` its sentence,
    ``reply`` the whole reply object."""

    code: str | None = None

    def __init__(self, code: str | None, message: str, reply: Any = None) -> None:
        super().__init__(f"{message} [{code}]" if code else message)
        self.code = code
        self.message = message
        self.reply = reply


class InvalidRequestError(KernelError):
    code = "invalid_request"


class BadFrameError(KernelError):
    code = "bad_frame"


class UnknownOpcodeError(KernelError):
    code = "unknown_opcode"


class NotSupportedError(KernelError):
    code = "not_supported"


class PermissionDeniedError(KernelError):
    code = "permission_denied"


class NotFoundError(KernelError):
    code = "not_found"


class NameTakenError(KernelError):
    code = "name_taken"


class MailboxFullError(KernelError):
    code = "mailbox_full"


class InvalidStateError(KernelError):
    code = "invalid_state"


class SpawnFailedError(KernelError):
    code = "spawn_failed"


class StorageError(KernelError):
    code = "storage_error"


class InternalError(KernelError):
    code = "internal"


#: kernel error code -> exception class (docs/protocol.md §4)
KERNEL_ERRORS: dict[str, type[KernelError]] = {
    cls.code: cls  # type: ignore[misc]
    for cls in (
        InvalidRequestError,
        BadFrameError,
        UnknownOpcodeError,
        NotSupportedError,
        PermissionDeniedError,
        NotFoundError,
        NameTakenError,
        MailboxFullError,
        InvalidStateError,
        SpawnFailedError,
        StorageError,
        InternalError,
    )
}


def kernel_error(reply: Any) -> KernelError:
    """Builds the typed exception for an error reply (an unknown code gives a plain KernelError)."""
    if isinstance(reply, dict):
        code = reply.get("code")
        message = str(reply.get("error") or "kernel reported an error")
    else:
        code, message = None, str(reply)
    cls = KERNEL_ERRORS.get(code, KernelError) if isinstance(code, str) else KernelError
    return cls(code if isinstance(code, str) else None, message, reply)
