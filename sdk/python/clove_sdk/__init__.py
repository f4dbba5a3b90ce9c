"""Clove SDK: a Python client for the Clove kernel (stdlib only).

    from clove_sdk import CloveClient

    with CloveClient() as c:          # $CLOVE_SOCKET, else /tmp/clove.sock
        c.hello()
        c.send_message({"hi": 1}, to_name="worker")
        msg = c.wait_message(timeout=5)
"""

from . import errors, protocol
from .client import (
    DEFAULT_SOCKET_PATH,
    AgentOSClient,
    CloveClient,
    EncodedMessage,
    ThinkStream,
    connect,
    default_socket_path,
    durable_step,
)
from .errors import (
    KERNEL_ERRORS,
    BadFrameError,
    BadMagicError,
    BadPushError,
    CloveError,
    ConnectionClosedError,
    InternalError,
    InvalidRequestError,
    InvalidStateError,
    JournalDivergedError,
    KernelError,
    MailboxFullError,
    NameTakenError,
    NotFoundError,
    NotSupportedError,
    PayloadTooLargeError,
    PermissionDeniedError,
    ProtocolError,
    SpawnFailedError,
    StorageError,
    TimeoutError,
    UnexpectedReplyError,
    UnknownOpcodeError,
)
from .protocol import (
    DEFAULT_MAX_PAYLOAD,
    HEADER_SIZE,
    MAGIC,
    PROTOCOL_VERSION,
    Frame,
    FrameDecoder,
    Message,
    encode_frame,
    op_name,
)

__version__ = "0.1.0"


# PEP 562: the opcode enum is made on first use (see protocol._syscall_op).
def __getattr__(name: str):
    if name in ("SyscallOp", "Op"):
        return getattr(protocol, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "CloveClient",
    "EncodedMessage",
    "AgentOSClient",
    "ThinkStream",
    "connect",
    "durable_step",
    "default_socket_path",
    "DEFAULT_SOCKET_PATH",
    "errors",
    "protocol",
    "CloveError",
    "ConnectionClosedError",
    "TimeoutError",
    "ProtocolError",
    "BadMagicError",
    "PayloadTooLargeError",
    "UnexpectedReplyError",
    "BadPushError",
    "KernelError",
    "KERNEL_ERRORS",
    "InvalidRequestError",
    "BadFrameError",
    "UnknownOpcodeError",
    "NotSupportedError",
    "PermissionDeniedError",
    "NotFoundError",
    "NameTakenError",
    "MailboxFullError",
    "InvalidStateError",
    "JournalDivergedError",
    "SpawnFailedError",
    "StorageError",
    "InternalError",
    "MAGIC",
    "HEADER_SIZE",
    "DEFAULT_MAX_PAYLOAD",
    "PROTOCOL_VERSION",
    "SyscallOp",
    "Op",
    "op_name",
    "Frame",
    "Message",
    "encode_frame",
    "FrameDecoder",
    "__version__",
]
