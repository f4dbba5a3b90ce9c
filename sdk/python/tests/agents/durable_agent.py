"""Agent for sdk/python/tests/test_durable.py: journaled steps through the Python SDK.

argv: MODE DOC [URL]. Whatever it computes is stored (STORE, global) under ``durable-result:<its name>``.

- ``plain``: summarizes DOC in a journaled step (``@durable_step("summarize:{doc}")``) of 5 THINK calls,
  each prompt built on the previous answer; stores the 5 answers. ``stay``: the same, then waits for
  ``bye`` before it exits.
- ``crash``: the same, but its first process SIGKILLs itself right after the 3rd THINK (a marker file in
  its work directory says it did); the restarted process first waits for the message ``go`` (so that
  the test can look at the provider's log in between), then runs the same code, and after storing its
  result waits for ``bye`` before it exits (so that the test can look at it while it lives).
- ``diverge``: a step of one THINK, then the same step with another prompt (``journal_diverged``), then
  again with ``on_divergence="truncate"``.
- ``effects``: ``with client.step("effects")``: an EXEC that appends a line to a file, and an HTTP GET of
  URL; its first process SIGKILLs itself inside the step; the restarted one runs the same code, then
  reads the file outside any step, and waits for ``bye``.
- ``snoop``: tries to read and clear the journal of the agent named DOC, then runs the ``plain`` step.
"""

from __future__ import annotations

import os
import signal
import sys

from clove_sdk import CloveClient, JournalDivergedError, KernelError, durable_step

MODE, DOC = sys.argv[1], sys.argv[2]
NAME = os.environ["CLOVE_AGENT_NAME"]
MARKER = "crashed-once"

client = CloveClient(timeout=60, strict=True)
client.connect()
first_run = not os.path.exists(MARKER)


def die_once() -> None:
    """The first process dies here, as a crash would take it: no cleanup, nothing sent."""
    if first_run:
        with open(MARKER, "w") as f:
            f.write("1")
        os.kill(os.getpid(), signal.SIGKILL)


@durable_step("summarize:{doc}")
def summarize(c: CloveClient, doc: str, crash_after: int = 0) -> list[str]:
    notes: list[str] = []
    text = f"the document {doc}"
    for i in range(1, 6):
        answer = c.think(f"step {i}: summarize {text}", max_tokens=32)["content"]
        notes.append(answer)
        text = answer
        if i == crash_after:
            die_once()
    return notes


def result(value) -> None:
    client.store(f"durable-result:{NAME}", value)


def wait_for(word: str) -> None:
    while True:
        m = client.wait_message(timeout=30)
        if m and m.get("message") == word:
            return


if MODE in ("plain", "stay"):
    result({"notes": summarize(client, DOC)})
    if MODE == "stay":
        wait_for("bye")
elif MODE == "crash":
    if not first_run:
        wait_for("go")
    result({"notes": summarize(client, DOC, crash_after=3)})
    wait_for("bye")
elif MODE == "diverge":
    with client.step("div") as begun:
        first = client.think("one", max_tokens=8)["content"]
    out: dict = {"first_state": begun["state"], "first": first}
    try:
        with client.step("div"):
            client.think("two", max_tokens=8)
        out["diverged"] = None
    except JournalDivergedError as e:
        out["diverged"] = {k: e.reply.get(k) for k in ("code", "key", "position", "journaled_op", "op")}
    with client.step("div", on_divergence="truncate") as begun:
        out["truncate_state"] = begun["state"]
        out["second"] = client.think("two", max_tokens=8)["content"]
    out["status"] = client.step_status("div")["steps"]
    result(out)
elif MODE == "effects":
    url = sys.argv[3]
    with client.step("effects"):
        ran = client.exec("echo ran >> side-effect.txt; wc -l < side-effect.txt")
        got = client.http(url)
        die_once()
    after = client.exec("cat side-effect.txt")
    result({"count": ran["stdout"].strip(), "body": got["body"], "file": after["stdout"]})
    wait_for("bye")
elif MODE == "snoop":
    out = {}
    for what, call in (("status", client.step_status), ("clear", client.step_clear)):
        try:
            call(name=DOC)
            out[what] = "allowed"
        except KernelError as e:
            out[what] = e.code
    out["notes"] = summarize(client, "doc-17")
    result(out)
else:
    raise SystemExit(f"unknown mode {MODE}")
client.close()
