"""The adapters' tests run under the frameworks' interpreter (bench/rivals/.venv, pinned versions, made by
ci/frameworks.sh); ci/pytest.sh runs this folder with it. The parent conftest (kernel fixtures, the
provider stub) applies here too."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))  # provider_stub


def require(module: str):
    """The framework module, or a failure in CI (never a silent skip there), a skip elsewhere."""
    try:
        return __import__(module)
    except ImportError as e:
        msg = f"{module} is not installed in {sys.executable} (run bash ci/frameworks.sh): {e}"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
