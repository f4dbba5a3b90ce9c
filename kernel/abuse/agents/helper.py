"""Bystanders of the abuse suite (kernel/abuse/abuse.test.ts): the agents an abuser aims at, and the
agents that set the scene for it. Stdlib + the Clove SDK. HELPER_ROLE picks the part; every report goes
to REPORT_TO as {"t": <kind>, "name": <agent name>, …}.

  idle        says "ready", then sleeps without a single syscall (its mailbox only fills up)
  subscriber  SUBSCRIBEs to TOPIC, says "ready", then waits for messages; on {"cmd": "poll"} it takes
              its queued events (POLL_EVENTS, no wait) and reports count, bytes and `dropped`
  sink        SUBSCRIBEs to GO_EVENT, says "ready"; on each such event it takes its whole mailbox in
              ONE RECV and reports the batch (the poison-message case)
  crash       reports, then exits 1 (with max_restarts 0: escalated, FAILED, at once)
  keeper      STOREs KEY_AGENT (agent scope) = SECRET and KEY_GLOBAL (global) = "original", writes
              SECRET to secret.txt in its work directory, reports, exits 0
  spawner     SPAWNs a keeper named KID_NAME (env passed through), reports the reply, exits 0
  child       what a new agent under a reused name can see: FETCH CHECK_KEY (any scope, then agent
              scope), secret.txt in its work directory; tries to overwrite the global CHECK_GLOBAL;
              reports, exits 0
"""
import json
import os
import sys
import time

from clove_sdk import CloveClient
from clove_sdk.protocol import SyscallOp

ROLE = os.environ["HELPER_ROLE"]
NAME = os.environ["CLOVE_AGENT_NAME"]
REPORT_TO = int(os.environ["REPORT_TO"])

c = CloveClient(timeout=30)
c.connect()
c.hello()


def report(kind, **fields):
    body = {"t": kind, "name": NAME, "role": ROLE, **fields}
    # Printed too: the log is the fallback when a mailbox cannot take the report.
    print("HELPER-REPORT " + json.dumps(body), flush=True)
    for attempt in range(100):
        r = c.send_message(body, to=REPORT_TO)
        if r.get("success") or r.get("code") != "mailbox_full":
            return r
        time.sleep(0.02)
    return r


if ROLE == "idle":
    report("ready")
    while True:
        time.sleep(3600)

elif ROLE == "subscriber":
    r = c.subscribe([os.environ["TOPIC"]])
    report("ready", subscribe=r)
    while True:
        m = c.wait_message(timeout=None)
        if m and isinstance(m.get("message"), dict) and m["message"].get("cmd") == "poll":
            p = c.call_json(SyscallOp.SYS_POLL_EVENTS, {"max": 1000})
            events = p.get("events") or []
            report(
                "polled",
                success=p.get("success"),
                code=p.get("code"),
                count=p.get("count"),
                dropped=p.get("dropped"),
                bytes=sum(len(json.dumps(e)) for e in events),
            )

elif ROLE == "sink":
    r = c.subscribe([os.environ["GO_EVENT"]])
    report("ready", subscribe=r)
    while True:
        ev = c.wait_event(timeout=None)
        if ev is None:
            continue
        r = c.recv_messages(100)
        msgs = r.get("messages") or []
        report(
            "batch",
            success=r.get("success"),
            code=r.get("code"),
            count=r.get("count"),
            messages=[{"from_name": m.get("from_name"), "message": m.get("message")} for m in msgs],
        )

elif ROLE == "crash":
    report("crashing")
    sys.exit(1)

elif ROLE == "keeper":
    a = c.store(os.environ["KEY_AGENT"], os.environ["SECRET"], scope="agent")
    g = c.store(os.environ["KEY_GLOBAL"], "original", scope="global")
    # A file in its own work directory (its default cwd) too.
    try:
        with open("secret.txt", "w") as f:
            f.write(os.environ["SECRET"])
        wrote = os.path.join(os.getcwd(), "secret.txt")
    except OSError as e:
        wrote = f"error: {e}"
    report("kept", agent=a, glob=g, file=wrote)
    sys.exit(0)

elif ROLE == "spawner":
    env = {
        "HELPER_ROLE": "keeper",
        "REPORT_TO": str(REPORT_TO),
        "KEY_AGENT": os.environ["KEY_AGENT"],
        "KEY_GLOBAL": os.environ["KEY_GLOBAL"],
        "SECRET": os.environ["SECRET"],
    }
    r = c.spawn(os.environ["KID_NAME"], os.path.abspath(__file__), env=env)
    report("spawned", reply=r)
    sys.exit(0)

elif ROLE == "child":
    key = os.environ["CHECK_KEY"]
    any_scope = c.fetch(key)
    agent_scope = c.fetch(key, scope="agent")
    overwrite = c.store(os.environ["CHECK_GLOBAL"], "overwritten by a reused name", scope="global")
    after = c.fetch(os.environ["CHECK_GLOBAL"], scope="global")
    try:
        with open("secret.txt") as f:
            old_file = "read: " + f.read()
    except FileNotFoundError:
        old_file = "absent"
    except OSError as e:
        old_file = f"error: {type(e).__name__}"
    report(
        "child",
        cwd=os.getcwd(),
        fetch=any_scope,
        fetch_agent=agent_scope,
        overwrite=overwrite,
        global_after=after,
        old_file=old_file,
    )
    sys.exit(0)

else:
    raise SystemExit(f"unknown HELPER_ROLE {ROLE!r}")
