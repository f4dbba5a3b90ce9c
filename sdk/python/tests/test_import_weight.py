"""`import clove_sdk` stays light: every agent pays for it at each (re)start (bench/restart.ts, series
clove/sdk), so it loads what its first call needs (socket, struct, json, threading) and nothing heavier."""

from __future__ import annotations

import copy
import pickle
import subprocess
import sys
from dataclasses import FrozenInstanceError, dataclass
from pathlib import Path

import pytest

from clove_sdk.protocol import Frame, FrameDecoder, encode_frame

SDK = Path(__file__).resolve().parents[1]  # sdk/python

# Standard-library modules the SDK used to load at import (dataclasses pulls in inspect, ast, dis and
# tokenize; typing and base64 were only for annotations and THINK images), and others it must not start
# needing. A plain `python -c pass` loads none of them (run with -S: no site hooks of this machine).
HEAVY = (
    "dataclasses",
    "inspect",
    "ast",
    "dis",
    "tokenize",
    "typing",
    "base64",
    "uuid",
    "asyncio",
    "logging",
    "subprocess",
    "tempfile",
    "pathlib",
    "datetime",
    "email",
    "http",
    "urllib",
    "ssl",
    "hashlib",
    "random",
    "importlib.metadata",
)


def modules_after(statements: str) -> set[str]:
    """sys.modules of a fresh interpreter (no site) after `statements`, with the SDK on its path."""
    code = f"import sys; sys.path.insert(0, {str(SDK)!r})\n{statements}\nprint(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, check=True, timeout=60)
    return set(out.stdout.split())


def test_import_loads_no_heavy_module():
    loaded = modules_after("import clove_sdk\nfrom clove_sdk import CloveClient\nCloveClient('/nonexistent.sock')")
    assert "clove_sdk.client" in loaded
    assert sorted(m for m in HEAVY if m in loaded) == []
    # the baseline it is compared with really is lighter than that: the check would see a regression
    assert "dataclasses" in modules_after("import dataclasses")


def test_first_calls_against_a_kernel_stay_light(kernel):
    loaded = modules_after(
        "from clove_sdk import CloveClient\n"
        f"c = CloveClient({kernel.socket!r}, timeout=10, strict=True)\n"
        "me = c.hello()['agent_id']\n"
        "assert c.echo('ping') == 'ping'\n"
        "c.send_message({'hi': 1}, to=me)\n"
        "assert c.recv_messages(max_messages=1)['messages'][0]['message'] == {'hi': 1}\n"
        "c.close()"
    )
    assert sorted(m for m in HEAVY if m in loaded) == []


@dataclass(frozen=True)
class Reference:
    """What Frame was: a frozen dataclass of the same fields."""

    agent_id: int
    opcode: int
    payload: bytes


def test_frame_behaves_as_the_frozen_dataclass_it_replaced():
    f = Frame(7, 0x20, b'{"a":1}')
    ref = Reference(7, 0x20, b'{"a":1}')
    assert repr(f) == repr(ref).replace("Reference", "Frame")
    assert f == Frame(7, 0x20, b'{"a":1}') and hash(f) == hash(Frame(7, 0x20, b'{"a":1}'))
    assert hash(f) == hash(ref)
    assert f != Frame(7, 0x21, b'{"a":1}') and f != (7, 0x20, b'{"a":1}') and f != ref
    with pytest.raises(FrozenInstanceError, match="cannot assign to field 'opcode'"):
        f.opcode = 1  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError, match="cannot delete field 'payload'"):
        del f.payload  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(f)) == f and copy.copy(f) == f and copy.deepcopy(f) == f
    match f:
        case Frame(agent_id, opcode, payload):
            assert (agent_id, opcode, payload) == (7, 0x20, b'{"a":1}')
    assert f.json() == {"a": 1} and f.op is not None and f.op.log_name == "SEND"
    assert FrameDecoder().feed(f.serialize()) == [f]
    assert f.serialize() == encode_frame(0x20, b'{"a":1}', agent_id=7)
