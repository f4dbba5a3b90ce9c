"""The warm standby launcher (``python -m clove_sdk._standby SCRIPT ARGS...``, docs/supervision.md
"Warm standby"): it parks with SIGUSR1 and the SIGUSR2 marker blocked, and on SIGUSR1 runs SCRIPT as
``python SCRIPT ARGS...`` would."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SDK = Path(__file__).resolve().parents[1]  # sdk/python

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _blocked(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigBlk:"):
            return int(line.split()[1], 16)
    return 0


def test_parks_then_runs_the_script_as_main(tmp_path: Path) -> None:
    script = tmp_path / "agent.py"
    script.write_text(
        "import ctypes, json, sys, signal\n"
        "d = ctypes.c_int(-1)\n"
        "ctypes.CDLL(None).prctl(2, ctypes.byref(d), 0, 0, 0)\n"  # PR_GET_PDEATHSIG
        "print(json.dumps({'name': __name__, 'argv': sys.argv, 'path0': sys.path[0], 'pdeathsig': d.value,"
        " 'sdk': 'clove_sdk' in sys.modules,"
        " 'blocked': sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, set()))}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SDK)}
    p = subprocess.Popen(
        [sys.executable, "-m", "clove_sdk._standby", str(script), "a", "b"],
        env=env,
        cwd="/",
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        # Parked: SIGUSR2 (the marker the kernel looks for) is in the blocked set.
        while not _blocked(p.pid) & (1 << (signal.SIGUSR2 - 1)):
            assert p.poll() is None, "the launcher exited before parking"
            assert time.monotonic() < deadline, "the launcher never parked"
            time.sleep(0.01)
        os.kill(p.pid, signal.SIGUSR1)
        out, _ = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0
    got = json.loads(out)
    assert got["name"] == "__main__"
    assert got["argv"] == [str(script), "a", "b"]
    assert got["path0"] == str(tmp_path)
    assert got["sdk"] is True
    assert got["blocked"] == []
    assert got["pdeathsig"] == 0  # promoted: it is the agent now, and outlives its parent like one


def test_usage_without_a_script() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "clove_sdk._standby"],
        env={**os.environ, "PYTHONPATH": str(SDK)},
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert r.returncode == 2
    assert "usage" in r.stderr


def test_a_parked_standby_dies_with_its_parent(tmp_path: Path) -> None:
    # A parent that starts the launcher, prints its pid and waits: SIGKILL of it must not leave the
    # standby parked for ever (a kernel that died).
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time\n"
            "p = subprocess.Popen([sys.executable, '-m', 'clove_sdk._standby', '/nonexistent.py'])\n"
            "print(p.pid, flush=True)\n"
            "time.sleep(60)\n",
        ],
        env={**os.environ, "PYTHONPATH": str(SDK)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        deadline = time.monotonic() + 20
        while not _blocked(pid) & (1 << (signal.SIGUSR2 - 1)):
            assert time.monotonic() < deadline, "the launcher never parked"
            time.sleep(0.01)
        parent.kill()
        parent.wait(timeout=20)
        deadline = time.monotonic() + 20
        while Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid):
            assert time.monotonic() < deadline, "the standby outlived its parent"
            time.sleep(0.01)
    finally:
        if parent.poll() is None:
            parent.kill()


def _state(pid: int) -> str:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("State:"):
                return line
    except OSError:
        pass
    return "zombie"


def _start_parked(script: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """The launcher for `script`, once it is parked."""
    p = subprocess.Popen(
        [sys.executable, "-m", "clove_sdk._standby", str(script), *args],
        env={**os.environ, "PYTHONPATH": str(SDK), **(env or {})},
        cwd="/",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 20
    while not _blocked(p.pid) & (1 << (signal.SIGUSR2 - 1)):
        if p.poll() is not None or time.monotonic() > deadline:
            p.kill()
            raise AssertionError(f"the launcher never parked: {p.communicate()}")
        time.sleep(0.01)
    return p


def _promote(p: subprocess.Popen[str]) -> tuple[str, str]:
    os.kill(p.pid, signal.SIGUSR1)
    try:
        return p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()


def test_the_script_gets_the_globals_python_gives_a_script(tmp_path: Path) -> None:
    # Compiled while parked, run in a fresh __main__: what `python SCRIPT` gives, pickling of its classes included.
    script = tmp_path / "agent.py"
    script.write_text(
        "# -*- coding: latin-1 -*-\n"
        "import json, pickle, sys\n"
        "class C:\n"
        "    pass\n"
        "print(json.dumps({'file': __file__, 'cached': __cached__, 'spec': __spec__, 'package': __package__,\n"
        "  'loader': type(__loader__).__name__, 'main': sys.modules['__main__'].__dict__ is globals(),\n"
        "  'pickled': type(pickle.loads(pickle.dumps(C()))).__name__, 'doc': __doc__, 'text': '\xe9'}))\n",
        encoding="latin-1",
    )
    direct = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=20, cwd="/")
    out, err = _promote(_start_parked(script))
    assert err == ""
    assert json.loads(out) == json.loads(direct.stdout)
    assert json.loads(out)["main"] is True and json.loads(out)["text"] == "\xe9"


def test_a_script_changed_while_parked_runs_as_it_is_now(tmp_path: Path) -> None:
    script = tmp_path / "agent.py"
    script.write_text("print('old')\n")
    p = _start_parked(script)
    script.write_text("print('new, and longer')\n")
    out, _ = _promote(p)
    assert out == "new, and longer\n"


def test_a_script_that_does_not_compile_fails_at_promotion_as_python_would(tmp_path: Path) -> None:
    script = tmp_path / "agent.py"
    script.write_text("def broken(:\n")
    p = _start_parked(script)
    _, err = _promote(p)
    assert p.returncode == 1
    assert "SyntaxError" in err


def test_the_first_client_takes_the_connection_opened_while_parked(tmp_path: Path) -> None:
    import socket
    import struct

    path = str(tmp_path / "k.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(4)
    server.settimeout(20)
    script = tmp_path / "agent.py"
    script.write_text(
        "from clove_sdk import CloveClient\n"
        "c = CloveClient()\n"
        "print(c.echo('hi'))\n"
    )
    p = _start_parked(script, env={"CLOVE_SOCKET": path})
    try:
        conn, _ = server.accept()  # opened while parked, before the promotion
        conn.settimeout(20)
        os.kill(p.pid, signal.SIGUSR1)
        head = conn.recv(17, socket.MSG_WAITALL)
        magic, agent_id, op, size = struct.unpack("<IIBQ", head)
        body = conn.recv(size, socket.MSG_WAITALL)
        conn.sendall(struct.pack("<IIBQ", magic, 7, op, len(body)) + body)
        out, _ = p.communicate(timeout=20)
        assert out.strip() == "hi"
        server.settimeout(0)
        with pytest.raises(BlockingIOError):
            server.accept()  # no second connection
        conn.close()
    finally:
        if p.poll() is None:
            p.kill()
        server.close()
