"""Test agent: echoes every message back to its sender, and obeys a few commands.

Messages are JSON objects; {"cmd": ...} ones are commands, anything else is echoed as
{"echo": <message>, "from": <sender id>, "from_name": ..., "seq": ...}.

  {"cmd": "info"}                 -> hello reply, argv, cwd, CLOVE_* env, PYTHONPATH, extra env
  {"cmd": "store", key, value, scope, ttl?} / {"cmd": "fetch", key, scope?} / {"cmd": "delete", key, scope?}
                                  -> the kernel's reply to that call
  {"cmd": "heartbeat"}             -> the kernel's reply to HEARTBEAT
  {"cmd": "getperms"} / {"cmd": "setperms", level?, permissions?, agent_id?} -> the kernel's reply
  {"cmd": "exit", "code": n}      -> replies {"bye": n}, then exits with status n
  {"cmd": "hang", "seconds": n}   -> replies {"hanging": n}, then sleeps n seconds without a syscall
"""

import os
import sys
import time

try:
    import clove_sdk  # noqa: F401  (the kernel puts sdk/python on PYTHONPATH)

    IMPORTED_VIA = "PYTHONPATH"
except ImportError:  # keep the test diagnosable if it does not: the test asserts IMPORTED_VIA
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    IMPORTED_VIA = "fallback"

from clove_sdk import CloveClient, ConnectionClosedError


def main() -> int:
    with CloveClient(timeout=30) as c:
        hello = c.hello()
        print(f"echo agent up: {hello}", flush=True)
        while True:
            try:
                msg = c.wait_message(timeout=None)
            except ConnectionClosedError:
                return 0
            if msg is None:
                continue
            body, sender = msg.get("message"), msg.get("from")
            cmd = body.get("cmd") if isinstance(body, dict) else None
            if cmd == "info":
                c.send_message(
                    {
                        "hello": hello,
                        "argv": sys.argv[1:],
                        "cwd": os.getcwd(),
                        "env": {k: v for k, v in os.environ.items() if k.startswith("CLOVE_") or k == "TEST_EXTRA"},
                        "pythonpath": os.environ.get("PYTHONPATH", ""),
                        "imported_via": IMPORTED_VIA,
                        "pid": os.getpid(),
                    },
                    to=sender,
                )
            elif cmd == "store":
                r = c.store(body["key"], body.get("value"), body.get("scope", "global"), body.get("ttl"))
                c.send_message({"reply": r}, to=sender)
            elif cmd == "fetch":
                c.send_message({"reply": c.fetch(body["key"], body.get("scope"))}, to=sender)
            elif cmd == "delete":
                c.send_message({"reply": c.delete_key(body["key"], body.get("scope"))}, to=sender)
            elif cmd == "heartbeat":
                c.send_message({"reply": c.heartbeat()}, to=sender)
            elif cmd == "getperms":
                c.send_message({"reply": c.get_permissions()}, to=sender)
            elif cmd == "setperms":
                r = c.set_permissions(body.get("permissions"), body.get("level"), body.get("agent_id"))
                c.send_message({"reply": r}, to=sender)
            elif cmd == "hang":
                seconds = float(body.get("seconds", 30))
                c.send_message({"hanging": seconds}, to=sender)
                time.sleep(seconds)
            elif cmd == "exit":
                code = int(body.get("code", 0))
                c.send_message({"bye": code}, to=sender)
                return code
            else:
                c.send_message(
                    {"echo": body, "from": sender, "from_name": msg.get("from_name"), "seq": msg.get("seq")},
                    to=sender,
                )


if __name__ == "__main__":
    sys.exit(main())
