"""The Python SDK against the contract (protocol/wire.json, protocol/families/*.json).

The opcode table in clove_sdk/protocol.py is generated from the contract; these tests check that it is
current (``node protocol/generate.mjs --check``), that its values are the contract's codes, and that
every opcode names a method that exists on CloveClient.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from clove_sdk import CloveClient
from clove_sdk.protocol import OPCODES, SyscallOp

REPO = Path(__file__).resolve().parents[3]  # tests -> python -> sdk -> repo root
FAMILIES = REPO / "protocol" / "families"


def contract_ops() -> dict[str, dict]:
    """Opcode name -> its entry in protocol/families/*.json (with its family)."""
    ops: dict[str, dict] = {}
    for f in sorted(FAMILIES.glob("*.json")):
        fam = json.loads(f.read_text(encoding="utf-8"))
        for op in fam["opcodes"]:
            ops[op["name"]] = {**op, "family": fam["family"]}
    return ops


def test_opcode_table_lists_every_contract_opcode():
    assert sorted(OPCODES) == sorted(contract_ops())


@pytest.mark.parametrize("name", sorted(OPCODES))
def test_opcode_names_a_client_method(name):
    family, status, method = OPCODES[name]
    assert method, f"{name}: no Python SDK method named"
    assert callable(getattr(CloveClient, method, None)), (
        f"{name} ({family}, {status}): CloveClient.{method} does not exist"
    )


@pytest.mark.parametrize("name", sorted(OPCODES))
def test_opcode_values_match_the_contract(name):
    op = contract_ops()[name]
    assert OPCODES[name] == (op["family"], op["status"], op["sdk"]["python"])
    assert SyscallOp[name] == op["code"], f"SyscallOp.{name} is {SyscallOp[name]:#04x}, the contract says {op['code']:#04x}"
    assert SyscallOp[f"SYS_{name}"] is SyscallOp[name]


class _Recorder(CloveClient):
    """A client that records call_json instead of talking to a kernel."""

    def __init__(self) -> None:
        super().__init__("/nonexistent/clove.sock")
        self.calls: list[tuple[int, object]] = []

    def call_json(self, opcode, payload=None, *args, **kwargs):  # type: ignore[override]
        self.calls.append((opcode, payload))
        return {"success": False, "error": "recorded"}


def test_llm_report_and_async_poll_send_their_opcodes():
    c = _Recorder()
    c.llm_report(123)
    c.llm_report(7, success=False)
    c.async_poll()
    c.async_poll(max_results=3)
    assert c.calls == [
        (SyscallOp.LLM_REPORT, {"tokens": 123, "success": True}),
        (SyscallOp.LLM_REPORT, {"tokens": 7, "success": False}),
        (SyscallOp.ASYNC_POLL, {"max": 10}),
        (SyscallOp.ASYNC_POLL, {"max": 3}),
    ]


def test_generated_files_are_current():
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not on PATH: cannot run protocol/generate.mjs --check (CI has node)")
    r = subprocess.run(
        [node, "protocol/generate.mjs", "--check"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, (
        f"generated files are stale; run `npm run generate`\n{r.stdout}{r.stderr}"
    )
