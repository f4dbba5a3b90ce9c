"""Warm standby launcher (docs/supervision.md "Warm standby"): ``python -m clove_sdk._standby SCRIPT ARGS...``.

The kernel starts this in place of ``python SCRIPT ARGS...`` for an agent spawned with ``standby: 1``: the
same spawner, sandbox, environment and working directory as a restart would get. It imports the SDK
(the costly part of a Python agent's start), then parks: SIGUSR1 is blocked and waited for with
``sigwait``. The kernel sees it parked (SIGUSR2, blocked with it as a marker, in the blocked set of a process
whose command line names this module) and, when the agent's process dies, promotes it with SIGUSR1: the signal mask is restored
and SCRIPT runs as ``__main__`` with ``sys.argv == [SCRIPT, ARGS...]`` and ``sys.path[0]`` its directory,
as ``python SCRIPT`` would have. It never connects to the kernel before it is promoted.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys


_PR_SET_PDEATHSIG = 1


def _pdeathsig(sig: int) -> None:
    """prctl(PR_SET_PDEATHSIG): a parked standby dies with the process that started it (the kernel, or
    clove-init). It is no agent yet: a kernel that died (and the next one, which does not know it) must
    not leave it parked for ever. Reset to 0 on promotion: from then on it is the agent."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
    except (ImportError, OSError, AttributeError):
        pass


def _park() -> None:
    # SIGUSR1 (the promotion) and SIGUSR2 (the marker) are blocked at once. Linux unblocks the signals
    # sigwait waits for while it waits, so the kernel looks for the marker: SIGUSR2 in our blocked set
    # (/proc/PID/status SigBlk) means SIGUSR1 is blocked or waited for, and a promotion cannot be lost.
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1, signal.SIGUSR2})
    signal.sigwait({signal.SIGUSR1})
    signal.pthread_sigmask(signal.SIG_SETMASK, old)


def main() -> None:
    if len(sys.argv) < 2:
        sys.stderr.write("usage: python -m clove_sdk._standby SCRIPT [ARGS...]\n")
        sys.exit(2)
    script = sys.argv[1]
    parent = os.getppid()
    _pdeathsig(signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        sys.exit(1)
    # What any agent imports first: the whole SDK (client, protocol, errors).
    import clove_sdk  # noqa: F401
    import clove_sdk.client  # noqa: F401

    _park()
    _pdeathsig(0)
    sys.argv = sys.argv[1:]
    here = os.path.dirname(os.path.abspath(script))
    if sys.path and sys.path[0] in ("", os.getcwd()):
        sys.path[0] = here
    else:
        sys.path.insert(0, here)
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
