"""Tiny command line: ``python -m clove_sdk [--socket PATH] COMMAND [ARG]``.

Commands: hello, list, echo TEXT, keys [PREFIX], fetch KEY, events [SECONDS], recv [SECONDS],
call OPCODE [JSON] (OPCODE as a name like SEND or a number like 0x20).
"""

from __future__ import annotations

import argparse
import json
import sys

from .client import CloveClient
from .errors import CloveError
from .protocol import SyscallOp


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m clove_sdk", description=__doc__.split("\n\n")[0])
    ap.add_argument("--socket", help="kernel socket (default: $CLOVE_SOCKET, else /tmp/clove.sock)")
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("command")
    ap.add_argument("args", nargs="*")
    ns = ap.parse_args(argv)
    a = ns.args
    try:
        with CloveClient(ns.socket, timeout=ns.timeout) as c:
            cmd = ns.command
            if cmd == "hello":
                out = c.hello()
            elif cmd == "list":
                out = c.list_agents()
            elif cmd == "echo":
                out = c.echo(" ".join(a))
            elif cmd == "keys":
                out = c.list_keys(a[0] if a else "")
            elif cmd == "fetch":
                out = c.fetch(a[0])
            elif cmd == "recv":
                out = c.recv_messages(timeout=float(a[0]) if a else None)
            elif cmd == "events":
                c.subscribe(["AGENT_SPAWNED", "AGENT_EXITED", "AGENT_RESTARTING", "AGENT_ESCALATED",
                             "AGENT_PAUSED", "AGENT_RESUMED", "STATE_CHANGED", "CUSTOM"])
                out = c.poll_events(timeout=float(a[0]) if a else None)
            elif cmd == "call":
                op = int(a[0], 0) if a[0][:1].isdigit() else int(SyscallOp[a[0].upper()])
                out = c.call_json(op, json.loads(a[1]) if len(a) > 1 else {})
            else:
                ap.error(f"unknown command {cmd!r}")
    except CloveError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(out if isinstance(out, str) else json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
