"""Shared plumbing for the rival-framework fault workloads (bench/rivals/run.py).

Every workload runs the same thing: a ring of N agents (a0 -> a1 -> ... -> a{N-1} -> a0)
built with the framework's own multi-agent construct and driven by the framework's own
fake/replay model.  Each agent turn calls the agent's `work` tool (plain user code, as a
real agent's tool would be), which takes the numbered work item handed over by the
previous agent, "works" on it for WORK_MS and hands item+1 to the next agent.

All progress goes to stdout as JSON lines (flushed, so a SIGKILL loses nothing that was
already reported):

  {"ev":"start", ...}                         work loop begins (after imports/setup)
  {"ev":"progress","agent":"a1","n":7,"item":36,"t":...}   one finished unit of work
  {"ev":"fault","agent":"a2","kind":"hang","t":...}       printed just before injection
  {"ev":"tool_error_seen", ...}               optional, framework-specific notes
  {"ev":"end","counts":{...},"t":...}         workload finished its time budget normally

Config comes from the environment (set by run.py):
  RIVALS_FAULT       none|sigkill|segfault|exception|leak|hang|forkbomb|cpu
  RIVALS_AGENTS      number of agents (default 5)
  RIVALS_FAULT_AGENT index of the faulty agent (default 2)
  RIVALS_FAULT_AT    seconds after start at which the faulty agent injects (default 3)
  RIVALS_DURATION    seconds of work before the workload stops itself (default 10)
  RIVALS_WORK_MS     simulated work per step in ms (default 20)
"""
from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import threading
import time

FAULT = os.environ.get("RIVALS_FAULT", "none")
N_AGENTS = int(os.environ.get("RIVALS_AGENTS", "5"))
FAULT_AGENT = f"a{int(os.environ.get('RIVALS_FAULT_AGENT', '2'))}"
FAULT_AT = float(os.environ.get("RIVALS_FAULT_AT", "3"))
DURATION = float(os.environ.get("RIVALS_DURATION", "10"))
WORK_S = float(os.environ.get("RIVALS_WORK_MS", "20")) / 1000.0
LEAK_STEP = 32 << 20  # bytes leaked per step of the faulty agent once the leak fault is on

AGENTS = [f"a{i}" for i in range(N_AGENTS)]

_lock = threading.Lock()
_t0: float | None = None


def emit(**obj) -> None:
    obj.setdefault("t", time.time())
    line = json.dumps(obj, separators=(",", ":"))
    with _lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def next_agent(name: str) -> str:
    return AGENTS[(AGENTS.index(name) + 1) % N_AGENTS]


class Ledger:
    """The work items in flight. The ring hands one item around; every agent records the
    items it finished so run.py can check that no item skipped an agent."""

    def __init__(self) -> None:
        self.item = 0           # item currently held by `holder`
        self.holder = AGENTS[0]
        self.counts = {a: 0 for a in AGENTS}
        self.fault_fired = False
        self.leaked: list[bytearray] = []

    def start(self, framework: str, version: str) -> None:
        global _t0
        _t0 = time.time()
        emit(ev="start", framework=framework, version=version, fault=FAULT,
             fault_agent=FAULT_AGENT, agents=AGENTS, duration=DURATION, fault_at=FAULT_AT,
             pid=os.getpid())

    def elapsed(self) -> float:
        return time.time() - (_t0 or time.time())

    def time_up(self) -> bool:
        return self.elapsed() >= DURATION

    def work(self, agent: str) -> str:
        """The body of every agent's `work` tool (synchronous user code)."""
        self.maybe_fault(agent)
        item = self.item
        time.sleep(WORK_S)
        self.counts[agent] += 1
        emit(ev="progress", agent=agent, n=self.counts[agent], item=item, holder=self.holder)
        self.item = item + 1
        self.holder = next_agent(agent)
        return f"{agent} finished item {item}; item {item + 1} goes to {self.holder}"

    # ----------------------------------------------------------------- faults
    def fault_due(self, agent: str) -> bool:
        return FAULT != "none" and agent == FAULT_AGENT and self.elapsed() >= FAULT_AT

    def maybe_fault(self, agent: str) -> None:
        if not self.fault_due(agent):
            return
        if FAULT == "leak":
            # a leak: every step of the faulty agent keeps 32 MiB (touched pages) alive
            if not self.fault_fired:
                emit(ev="fault", agent=agent, kind=FAULT)
                self.fault_fired = True
            self.leaked.append(bytearray(b"\x01") * LEAK_STEP)
            return
        if self.fault_fired and FAULT == "exception":
            return  # one-shot fault: the agent's next turns are healthy again
        self.fault_fired = True
        emit(ev="fault", agent=agent, kind=FAULT)
        inject(FAULT, agent)


def inject(kind: str, agent: str) -> None:
    if kind == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif kind == "segfault":
        ctypes.string_at(0)  # reads address 0: a real SIGSEGV in the interpreter
    elif kind == "exception":
        raise RuntimeError(f"injected fault: unhandled exception in agent {agent}")
    elif kind == "hang":
        threading.Event().wait()  # blocks forever
    elif kind == "cpu":
        x = 0
        while True:  # runaway busy loop
            x += 1
    elif kind == "forkbomb":
        # classic fork bomb; only ever launched inside a pids cgroup with pids.max=64
        while True:
            try:
                os.fork()
            except OSError:
                time.sleep(0.001)
    else:
        raise ValueError(f"unknown fault kind {kind!r}")


def finish(ledger: Ledger, **extra) -> None:
    emit(ev="end", counts=ledger.counts, **extra)
