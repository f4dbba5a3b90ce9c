"""examples/crew-crash run as its README says (`clove up -d`), end to end: three CrewAI crews served as Clove
agents by the SDK's runner and a lead; the writer segfaults in the middle of story 2, Clove restarts it, the
job it held comes back to it (RECV lease), and all three stories come out right. Then `clove down`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import require  # this folder's conftest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[4]
CLOVE_JS = REPO / "bin" / "clove.js"
EXAMPLE = REPO / "examples" / "crew-crash"
TOPICS = ["solar sails", "deep-sea vents", "honeybee dances"]


def test_a_crew_member_crashes_mid_task_and_the_crew_goes_on():
    require("crewai")
    root = Path(tempfile.mkdtemp(prefix="clvcc", dir="/tmp"))
    sock, data = root / "k.sock", root / "data"
    # the crews need the interpreter crewai is installed in: this one (the frameworks' venv)
    env = {**os.environ, "CREW_PYTHON": sys.executable}

    def clove(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(["node", str(CLOVE_JS), "--socket", str(sock), "--data-dir", str(data), *args],
                              cwd=EXAMPLE, env=env, capture_output=True, text=True, timeout=timeout)

    def log(name: str) -> str:
        p = data / "logs" / f"{name}.log"
        return p.read_text(errors="replace") if p.exists() else ""

    try:
        up = clove("up", "-d")
        assert up.returncode == 0, up.stdout + up.stderr
        deadline = time.monotonic() + 300
        while "all 3 stories done" not in log("lead"):
            assert time.monotonic() < deadline, f"lead:\n{log('lead')}\nwriter:\n{log('writer')}"
            time.sleep(0.5)
        stories = [line for line in log("lead").splitlines() if line.startswith("story ")]
        assert len(stories) == 3, stories
        for i, (line, topic) in enumerate(zip(stories, TOPICS), 1):
            assert line.startswith(f"story {i}/3 done in "), line
            assert line.endswith(f": {topic.capitalize()}, told in 40 words from three facts about {topic} [edited]"), line
        writer = log("writer")
        # the crash, mid-task (inside the crew's tool), the restart, and the job coming back to the new process
        assert "word_budget hits a native bug on story 2: segfault" in writer, writer
        assert "agent exited: killed by SIGSEGV" in writer, writer
        assert "clove run: request id='story-2/write' came back after the agent died (start 2)" in writer, writer
        ps = json.loads(clove("ps", "--json").stdout)
        restarts = {a["name"]: a["restarts"] for a in ps}
        assert restarts == {"researcher": 0, "writer": 1, "editor": 0}, ps  # the lead is done and gone
        assert "agent exited: exit code 0" in log("lead")
    finally:
        down = clove("down", timeout=120)
        shutil.rmtree(root, ignore_errors=True)
    assert down.returncode == 0, down.stderr
