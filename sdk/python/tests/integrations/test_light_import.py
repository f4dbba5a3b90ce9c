"""The adapters are optional: importing the SDK, or the integrations package, loads no framework."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SDK = Path(__file__).resolve().parents[2]  # sdk/python

FRAMEWORKS = ("langchain_core", "langgraph", "crewai", "autogen_agentchat", "autogen_core")


def test_importing_the_sdk_loads_no_framework():
    code = (
        "import sys, clove_sdk, clove_sdk.integrations; "
        f"print(','.join(m for m in {FRAMEWORKS!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONPATH": str(SDK)}
    )
    assert out.stdout.strip() == ""
