"""Conformance agent: connects, says HELLO, then sleeps without ever taking a message until it is killed.

Used by sdk/conformance/cases.json where a case needs a mailbox that nobody drains (spawned with a small
`mailbox_messages` budget, it fills up and refuses further messages with `mailbox_full`).
"""

import os
import signal

from clove_sdk import CloveClient


def main() -> None:
    # As idle.py: SIGTERM's default action is ignored by a pid 1 of its own pid namespace.
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    c = CloveClient()
    c.connect()
    c.hello()
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
