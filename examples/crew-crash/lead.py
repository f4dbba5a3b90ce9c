"""The newsroom's lead (a plain Clove agent, standard library + the Clove SDK): hands every story to the
researcher, the writer and the editor in turn (each a CrewAI crew served as a Clove agent) and prints the
result. It does not handle crashes: when the writer dies mid-story, Clove restarts it and the writer
finishes the job it had taken; the lead just waits a little longer for that answer."""

import sys
import time

from clove_sdk import CloveClient

TOPICS = ["solar sails", "deep-sea vents", "honeybee dances"]


def ask(c: CloveClient, who: str, inputs: dict, rid: str) -> str:
    """Sends a job to a crew agent and waits for its answer (the runner's {"id", "output"|"error"})."""
    c.send_message({"input": inputs, "id": rid}, to=who, check=True)
    while True:
        msg = c.wait_message(timeout=300)
        if msg is None:
            raise SystemExit(f"lead: no answer from {who} to {rid} in 300 s")
        body = msg["message"]
        if isinstance(body, dict) and body.get("id") == rid:
            if "error" in body:
                raise SystemExit(f"lead: {who} failed {rid}: {body['error']}")
            return body["output"]["raw"]


def main() -> int:
    with CloveClient(timeout=30) as c:
        c.hello()
        for i, topic in enumerate(TOPICS, 1):
            t = time.monotonic()
            notes = ask(c, "researcher", {"topic": topic}, f"story-{i}/research")
            draft = ask(c, "writer", {"topic": topic, "notes": notes}, f"story-{i}/write")
            final = ask(c, "editor", {"topic": topic, "draft": draft}, f"story-{i}/edit")
            print(f"story {i}/{len(TOPICS)} done in {time.monotonic() - t:.1f} s: {final}", flush=True)
        print(f"all {len(TOPICS)} stories done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
