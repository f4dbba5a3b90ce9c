"""Fixtures: the SDK on sys.path (no install needed), and a REAL Clove kernel per test.

The kernel fixture runs ``node <repo>/bin/clove.js kernel --socket <tmp>/clove.sock --data-dir <tmp>/data``
and skips (loudly: "KERNEL NOT READY") when the kernel has not been built yet.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
SDK = TESTS.parent  # sdk/python
REPO = TESTS.parents[2]  # tests -> python -> sdk -> repo root
AGENTS = TESTS / "agents"
CLOVE_JS = REPO / "bin" / "clove.js"
PYTHON = sys.executable  # resolved once, for anything we run ourselves

if str(SDK) not in sys.path:
    sys.path.insert(0, str(SDK))

from clove_sdk import CloveClient  # noqa: E402
from clove_sdk.protocol import FrameDecoder  # noqa: E402

STARTUP_TIMEOUT = 20.0


def pytest_configure(config):
    config.addinivalue_line("markers", "integration: needs a real Clove kernel (node bin/clove.js kernel)")


def kernel_missing() -> str | None:
    if shutil.which("node") is None:
        return "node is not on PATH"
    if not CLOVE_JS.exists():
        return f"{CLOVE_JS} does not exist"
    if not (REPO / "dist").is_dir():
        return f"{REPO / 'dist'} does not exist (run `npm run build`)"
    return None


class Kernel:
    """A running kernel: its socket, data dir, log, and helpers to make clients and spawn agents."""

    def __init__(self, root: str, fast_path: bool = False) -> None:
        self.root = root
        self.fast_path = fast_path
        self.socket = os.path.join(root, "clove.sock")
        self.data_dir = os.path.join(root, "data")
        self.log_path = os.path.join(root, "kernel.log")
        self.proc: subprocess.Popen | None = None
        self.clients: list[CloveClient] = []

    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()[-8000:]
        except OSError:
            return ""

    def start(self) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            ["node", str(CLOVE_JS), "kernel", "--socket", self.socket, "--data-dir", self.data_dir]
            + (["--fast-path"] if self.fast_path else []),
            cwd=str(REPO),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kernel exited with {self.proc.returncode} during startup:\n{self.log()}")
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(self.socket)
                return
            except OSError:
                time.sleep(0.05)
            finally:
                s.close()
        self.stop()
        raise RuntimeError(f"kernel socket not accepting after {STARTUP_TIMEOUT}s:\n{self.log()}")

    def stop(self) -> None:
        for c in self.clients:
            c.close()
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def client(self, timeout: float | None = 10.0, **kw) -> CloveClient:
        c = CloveClient(self.socket, timeout=timeout, **kw)
        assert c.connect(), f"cannot connect to {self.socket}"
        self.clients.append(c)
        return c

    def agent_log(self, name: str) -> str:
        """Best effort: the agent's log file somewhere under the data dir."""
        out = []
        for p in Path(self.data_dir).rglob(f"*{name}*"):
            if p.is_file() and p.suffix in (".log", ".txt", ""):
                try:
                    out.append(f"--- {p}\n" + p.read_text(errors="replace")[-4000:])
                except OSError:
                    pass
        return "\n".join(out)


def _kernel(fast_path: bool):
    why = kernel_missing()
    if why:
        # In CI a missing kernel is a failure, never a silent skip.
        if os.environ.get("CI") == "true":
            pytest.fail(f"KERNEL NOT READY: {why}")
        pytest.skip(f"KERNEL NOT READY: {why}")
    root = tempfile.mkdtemp(prefix="clv", dir="/tmp")
    k = Kernel(root, fast_path)
    try:
        k.start()
        yield k
    finally:
        k.stop()
        if os.environ.get("CLOVE_KEEP_TMP"):
            print(f"kernel dir kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def kernel():
    """A kernel on the TypeScript path (the default)."""
    yield from _kernel(False)


@pytest.fixture(params=[False, True], ids=["ts-path", "fast-path"])
def any_path_kernel(request):
    """The same test against a kernel on each path: TypeScript, and the native fast path (--fast-path)."""
    yield from _kernel(request.param)


@pytest.fixture
def provider_stub():
    """A local OpenAI-compatible provider (tests/provider_stub.py); set ``.responder`` to script it."""
    from provider_stub import ProviderStub, Reply

    with ProviderStub(lambda _body: Reply(content="stub answer")) as stub:
        yield stub


@pytest.fixture
def llm_kernel(provider_stub):
    """A kernel whose THINK goes to ``provider_stub`` (its ``<data-dir>/llm.json`` is written first)."""
    from provider_stub import write_llm_config

    why = kernel_missing()
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(f"KERNEL NOT READY: {why}")
        pytest.skip(f"KERNEL NOT READY: {why}")
    root = tempfile.mkdtemp(prefix="clv", dir="/tmp")
    k = Kernel(root)
    write_llm_config(k.data_dir, provider_stub.base_url)
    try:
        k.start()
        yield k
    finally:
        k.stop()
        if not os.environ.get("CLOVE_KEEP_TMP"):
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def op(kernel):
    """An operator client of the kernel (strict off, like the public SDK)."""
    return kernel.client()


class CountingSocket:
    """Wraps a client's socket and counts the request frames written through it."""

    def __init__(self, sock) -> None:
        self._sock = sock
        self._decoder = FrameDecoder()
        self.frames: list = []

    def sendall(self, data, *args):
        self.frames += self._decoder.feed(bytes(data))
        return self._sock.sendall(data, *args)

    def __getattr__(self, name):
        return getattr(self._sock, name)


def count_frames(client: CloveClient) -> CountingSocket:
    client._connect()
    wrapped = CountingSocket(client._sock)
    client._sock = wrapped  # type: ignore[assignment]
    return wrapped


def encode_push_binary(messages) -> bytes:
    """A PUSH_BINARY payload of ``messages`` (RECV's fields, ``message`` as its JSON text), as the kernel
    encodes it: for the fake kernels' pushes; checked against the shared vectors (test_vectors.py)."""
    out = [struct.pack("<I", len(messages))]
    for m in messages:
        name, text = m["from_name"].encode(), m["message"].encode()
        out += [struct.pack("<IIQII", m["from"], m["age_ms"], m["seq"], len(name), len(text)), name, text]
    return b"".join(out)
