"""Warm standby launcher (docs/supervision.md "Warm standby"): ``python -m clove_sdk._standby SCRIPT ARGS...``.

The kernel starts this in place of ``python SCRIPT ARGS...`` for an agent spawned with ``standby: 1``: the
same spawner, sandbox, environment and working directory as a restart would get. It imports the SDK
(the costly part of a Python agent's start), then parks: SIGUSR1 is blocked and waited for with
``sigwait``. The kernel sees it parked (SIGUSR2, blocked with it as a marker, in the blocked set of a process
whose command line names this module) and, when the agent's process dies, promotes it with SIGUSR1: the signal mask is restored
and SCRIPT runs as ``__main__`` with ``sys.argv == [SCRIPT, ARGS...]`` and ``sys.path[0]`` its directory,
as ``python SCRIPT`` would have.

While parked it also opens its connection to the kernel (``$CLOVE_SOCKET``) and sends nothing on it: the
kernel identifies it as the agent's already (its standby's), keeps it when the agent's old process dies,
and the script's first client takes it instead of connecting (``clove_sdk.client._preconnected``). The
SDK's framing and JSON code runs once on a dummy frame, so the first call after promotion runs warm. The
script is read and compiled while parked too (compiled again at promotion if the file changed since), and
runs in a fresh ``__main__`` module set up as the interpreter does for ``python SCRIPT`` (not through
``runpy``, whose imports and compile cost milliseconds at the moment that counts).
"""

from __future__ import annotations

import os
import signal
import sys
from types import CodeType, ModuleType


_PR_SET_PDEATHSIG = 1


def _pdeathsig(sig: int) -> None:
    """prctl(PR_SET_PDEATHSIG): a parked standby dies with the process that started it (the kernel, or
    clove-init). It is no agent yet: a kernel that died (and the next one, which does not know it) must
    not leave it parked for ever. Reset to 0 on promotion: from then on it is the agent."""
    global _prctl
    try:
        if _prctl is None:
            import ctypes

            _prctl = ctypes.CDLL(None, use_errno=True).prctl
        _prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
    except (ImportError, OSError, AttributeError):
        pass


_prctl = None


def _park() -> None:
    # SIGUSR1 (the promotion) and SIGUSR2 (the marker) are blocked at once. Linux unblocks the signals
    # sigwait waits for while it waits, so the kernel looks for the marker: SIGUSR2 in our blocked set
    # (/proc/PID/status SigBlk) means SIGUSR1 is blocked or waited for, and a promotion cannot be lost.
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1, signal.SIGUSR2})
    signal.sigwait({signal.SIGUSR1})
    signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _warm_up() -> None:
    """Runs the SDK's framing and JSON code once, on a frame that goes nowhere."""
    import json

    from clove_sdk.protocol import FrameDecoder, SyscallOp, encode_frame

    frame = encode_frame(SyscallOp.SYS_SEND, json.dumps({"to_name": "x", "message": {"warm": True}}))
    for f in FrameDecoder().feed(frame):
        f.json()


def _preconnect() -> None:
    """Connects to the kernel now, for the script's first client (best effort: it connects itself if not)."""
    import socket

    import clove_sdk.client as client

    path = client.default_socket_path()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        return
    client._preconnected = (path, sock)


def _stamp(path: str) -> tuple[int, ...] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _compile(path: str) -> CodeType:
    """The script's code, as the interpreter compiles a script it runs (bytes: its coding line holds)."""
    with open(path, "rb") as f:
        return compile(f.read(), path, "exec", dont_inherit=True)


def _precompile(path: str) -> tuple[tuple[int, ...] | None, CodeType | None]:
    """The script compiled now, with the file's stamp; (None, None) when that fails: the promoted process
    compiles it again and fails there, as ``python SCRIPT`` would."""
    stamp = _stamp(path)
    try:
        return stamp, _compile(path)
    except Exception:  # noqa: BLE001 - SyntaxError, OSError, ValueError (NUL bytes): reported at promotion
        return None, None


def _main_module(path: str) -> ModuleType:
    """A fresh ``__main__`` with the globals ``python SCRIPT`` gives a script (made while parked)."""
    import builtins
    from importlib.machinery import SourceFileLoader

    main = ModuleType("__main__")
    main.__file__ = path
    main.__cached__ = None
    main.__loader__ = SourceFileLoader("__main__", path)
    main.__builtins__ = builtins
    return main


def _run_as_main(main: ModuleType, code: CodeType) -> None:
    """Runs `code` as ``__main__`` in `main`."""
    sys.modules["__main__"] = main
    exec(code, main.__dict__)


def main() -> None:
    if len(sys.argv) < 2:
        sys.stderr.write("usage: python -m clove_sdk._standby SCRIPT [ARGS...]\n")
        sys.exit(2)
    script = sys.argv[1]
    parent = os.getppid()
    _pdeathsig(signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        sys.exit(1)
    # What any agent imports first: the whole SDK (client, protocol, errors).
    import clove_sdk  # noqa: F401
    import clove_sdk.client  # noqa: F401

    stamp, code = _precompile(script)
    module = _main_module(script)
    _warm_up()
    _preconnect()
    _park()
    _pdeathsig(0)
    sys.argv = sys.argv[1:]
    here = os.path.dirname(os.path.abspath(script))
    if sys.path and sys.path[0] in ("", os.getcwd()):
        sys.path[0] = here
    else:
        sys.path.insert(0, here)
    if code is None or stamp is None or _stamp(script) != stamp:
        code = _compile(script)
    _run_as_main(module, code)


if __name__ == "__main__":
    main()
