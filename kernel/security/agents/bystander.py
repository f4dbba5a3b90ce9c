"""The bystander of the security suite (kernel/security/security.test.ts): a well-behaved agent that
SENDs numbered messages to itself and RECVs them, in a loop, while other agents attack the kernel.
Stdlib + the Clove SDK.

* Every INTERVAL_MS it SENDs {"t": "b", "n": k} to its own id; k only grows once the kernel accepted
  message k (a refused SEND is counted in `errors` and retried with the same k).
* It RECVs (waiting in the kernel) until its message comes back: `got` counts them, `gaps` counts any
  departure from 1, 2, 3, … and the round trip (SEND accepted → message received) is timed.
* A "b" message whose sender is not itself is `foreign` (a forged sender would show up as a gap).
* {"cmd": "report"} from anybody: a cumulative report goes to REPORT_TO, with the longest round trip
  since the previous report (`window_max_rtt_ms`) and over the whole run (`max_rtt_ms`).
"""
import os
import time

from clove_sdk import CloveClient

REPORT_TO = int(os.environ["REPORT_TO"])
INTERVAL = int(os.environ.get("INTERVAL_MS", "20")) / 1000.0

c = CloveClient(timeout=30)
c.connect()
hello = c.hello()
ME = hello["agent_id"]

sent = 0
got = 0
expect = 1
gaps = 0
foreign = []
errors = {}
sent_at = {}
max_rtt = 0.0
window_max = 0.0


def count(kind, reply):
    code = reply.get("code") or "?"
    errors[f"{kind}:{code}"] = errors.get(f"{kind}:{code}", 0) + 1


def report():
    global window_max
    body = {
        "t": "report",
        "name": hello["name"],
        "id": ME,
        "pid": os.getpid(),
        "sent": sent,
        "got": got,
        "gaps": gaps,
        "foreign": foreign[-5:],
        "foreign_count": len(foreign),
        "errors": errors,
        "max_rtt_ms": round(max_rtt * 1000, 1),
        "window_max_rtt_ms": round(window_max * 1000, 1),
    }
    window_max = 0.0
    r = c.send_message(body, to=REPORT_TO)
    if not r.get("success"):
        count("report", r)


c.send_message({"t": "up", "name": hello["name"], "id": ME, "pid": os.getpid()}, to=REPORT_TO)
while True:
    t0 = time.monotonic()
    r = c.send_message({"t": "b", "n": sent + 1}, to=ME)
    if r.get("success"):
        sent += 1
        sent_at[sent] = t0
    else:
        count("send", r)
    deadline = t0 + INTERVAL
    while True:
        wait = deadline - time.monotonic()
        # at least one RECV per turn, waiting in the kernel for what is not there yet
        r = c.recv_messages(10, timeout=max(wait, 0.001))
        if not r.get("success"):
            count("recv", r)
        now = time.monotonic()
        for m in r.get("messages", []):
            body = m.get("message")
            if not isinstance(body, dict):
                continue
            if body.get("t") == "b":
                if m.get("from") != ME:
                    foreign.append({"from": m.get("from"), "from_name": m.get("from_name"), "n": body.get("n")})
                    continue
                n = body.get("n")
                if n != expect:
                    gaps += 1
                expect = (n if isinstance(n, int) else expect) + 1
                got += 1
                t = sent_at.pop(n, None)
                if t is not None:
                    max_rtt = max(max_rtt, now - t)
                    window_max = max(window_max, now - t)
            elif body.get("cmd") == "report":
                report()
        if now >= deadline and sent_at.get(sent) is None:
            break
        if now >= deadline + 5:
            break  # its message did not come back in 5 s: the next turn (and the report) shows it
