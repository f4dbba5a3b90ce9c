"""Conformance agent: connects, says HELLO, then idles on its mailbox until it is killed.

Used by sdk/conformance/cases.json wherever a case needs a real agent (SPAWN, LIST, PAUSE, RESUME,
KILL, SET_PERMS, METRICS_AGENT, ...). It answers nothing; it only has to be alive.
"""

import os
import signal

from clove_sdk import CloveClient


def main() -> None:
    # An agent may run as pid 1 of its own pid namespace, where SIGTERM's default action is ignored:
    # exit on it explicitly so KILL does not have to wait for its SIGKILL grace period.
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    c = CloveClient()
    c.connect()
    c.hello()
    while True:
        c.wait_message(timeout=None)


if __name__ == "__main__":
    main()
