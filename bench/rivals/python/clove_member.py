"""One ring member as its own Clove agent: the rivals' ring workload under Clove (bench/rivals/run.py).

    clove_member.py crewai|langgraph|autogen        (spawned by run.py; agent name a0..a4)

The same ring as the bare workloads (common.py): a0 -> a1 -> ... -> a4 -> a0, one numbered work item
handed on, each turn one fake-model call plus the agent's `work` tool (common.Ledger.work: 20 ms, a
progress line, the fault in a2). What changes: every member is a process of its own under a Clove kernel
(restart_policy always, a watchdog, cgroup limits of its own), runs the framework's own construct for ITS
turn only, built from the bare workload's code (a one-agent Crew, a one-node StateGraph, one
AssistantAgent), and hands the item on with the kernel's SEND/RECV:

- the item arrives as a message {"item", "holder", "counts", "t0"}, taken under a lease (RECV `lease`):
  if the member dies during its turn, the kernel puts the message back and the restarted member does
  the item again; the next RECV acknowledges it;
- the fault fires once per case: a2 notes it in its own agent-scoped key before injecting, so the
  process Clove restarts is the same code without the transient fault;
- a member that gets the item after the time budget prints {"ev":"end"} and does not hand it on.

Startup (imports take seconds, longer than the watchdog): the member says HELLO first and keeps a
heartbeat going from a forked child until its construct is built, then prints {"ev":"ready"} and stops
it; from then on only its own syscalls keep it alive, so a hung or spinning turn is killed by the
watchdog.
"""
from __future__ import annotations

import asyncio
import os
import select
import sys
import time

# crewai keeps files under ~/.local; an agent's HOME (the kernel's) is read-only in its sandbox: use the
# agent's own work directory
if not os.access(os.path.expanduser("~"), os.W_OK):
    os.environ["HOME"] = os.getcwd()
os.environ.setdefault("OTEL_SDK_DISABLED", "true")
os.environ.setdefault("CREWAI_DISABLE_TELEMETRY", "true")
os.environ.setdefault("CREWAI_DISABLE_TRACKING", "true")
os.environ.setdefault("CREWAI_TRACING_ENABLED", "false")
os.environ.setdefault("CREWAI_STORAGE_DIR", "/tmp/clove-rivals-crewai")

from clove_sdk import CloveClient, ConnectionClosedError  # noqa: E402  (sdk/python: the kernel's PYTHONPATH)
from clove_sdk.protocol import SyscallOp  # noqa: E402

import common  # noqa: E402  (this directory: sys.path[0])

NAME = os.environ["CLOVE_AGENT_NAME"]
FIRED_KEY = "rivals/fault-fired"
WAIT_MS = 30_000


class Heartbeat:
    """HEARTBEAT every 0.5 s while the member loads its framework, from a forked child on a connection of
    its own (it is in the agent's process tree, so it speaks for the agent): a thread would wait for the
    GIL, which an import can hold for seconds. The child ends when the parent closes the pipe or dies."""

    def __init__(self) -> None:
        r, self.w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            os.close(self.w)
            try:
                with CloveClient(timeout=10) as c:
                    c.heartbeat()
                    while not select.select([r], [], [], 0.5)[0]:
                        c.heartbeat()
            finally:
                os._exit(0)
        os.close(r)

    def stop(self) -> None:
        os.close(self.w)
        os.waitpid(self.pid, 0)


class RingLedger(common.Ledger):
    """common.Ledger fed from the item's message: time from the ring's t0, counts that survive restarts,
    and a fault that fires once per case (noted in this agent's store before it is injected)."""

    def __init__(self, client: CloveClient) -> None:
        super().__init__()
        self.client = client
        r = client.fetch(FIRED_KEY, "agent")
        self.fired_before = bool(isinstance(r, dict) and r.get("exists"))
        self.t0 = time.time()

    def take(self, token: dict) -> None:
        self.item, self.holder = token["item"], token["holder"]
        self.counts = {a: int(token["counts"].get(a, 0)) for a in common.AGENTS}
        self.t0 = float(token["t0"])

    def token(self) -> dict:
        return {"item": self.item, "holder": self.holder, "counts": self.counts, "t0": self.t0}

    def elapsed(self) -> float:
        return time.time() - self.t0

    def fault_due(self, agent: str) -> bool:
        return not self.fired_before and super().fault_due(agent)

    def maybe_fault(self, agent: str) -> None:
        if self.fault_due(agent) and not self.fault_fired:
            self.client.store(FIRED_KEY, True, "agent")
        super().maybe_fault(agent)


def crewai_turn(ledger: RingLedger):
    """A Crew of this one Agent and its Task, as crewai_workload.build_crew makes each of its five."""
    import crewai_workload as w
    from crewai import Agent, Crew, Process, Task

    w.ledger = ledger  # the workload's Work tool reports to this member's ledger
    tool = w.make_tool(NAME)
    agent = Agent(role=f"agent {NAME}", goal="process the work item and hand it on",
                  backstory="one stage of a ring", llm=w.ScriptedLLM(model="scripted", tool_name=tool.name),
                  tools=[tool], allow_delegation=False, verbose=False, max_iter=3)
    task = Task(description=f"{NAME}: take the current work item, process it with {tool.name}, hand it on",
                expected_output="a note saying the item was handed on", agent=agent)
    crew = Crew(agents=[agent], tasks=[task], process=Process.sequential, verbose=False)
    return lambda: crew.kickoff()


def langgraph_turn(ledger: RingLedger):
    """A StateGraph of this member's node (langgraph_workload.make_agent), START -> node -> END."""
    import langgraph_workload as w
    from langgraph.graph import END, START, StateGraph

    w.ledger = ledger
    g = StateGraph(w.State)
    g.add_node(NAME, w.make_agent(NAME))
    g.add_edge(START, NAME)
    g.add_edge(NAME, END)
    graph = g.compile()
    return lambda: graph.invoke({"item": ledger.item, "last": f"item {ledger.item} for {NAME}"})


def autogen_turn(ledger: RingLedger):
    """This member's AssistantAgent (autogen_workload.make_agent) run on the item, on one event loop."""
    import autogen_workload as w

    w.ledger = ledger
    agent = w.make_agent(NAME)
    loop = asyncio.new_event_loop()

    def turn() -> None:
        result = loop.run_until_complete(agent.run(task=f"item {ledger.item} is ready for {NAME}"))
        # tool errors AutoGen turned into messages (it does not raise them), reported as the bare run does
        for msg in result.messages:
            content = getattr(msg, "content", None)
            for r in content if isinstance(content, list) else []:
                if getattr(r, "is_error", False):
                    common.emit(ev="tool_error_seen", source=NAME, detail=str(getattr(r, "content", ""))[:200])

    return turn


TURNS = {"crewai": crewai_turn, "langgraph": langgraph_turn, "autogen": autogen_turn}


def main() -> int:
    kind = sys.argv[1]
    beat = Heartbeat()
    client = CloveClient(timeout=30)
    client.hello()
    ledger = RingLedger(client)
    turn = TURNS[kind](ledger)
    common.emit(ev="ready", agent=NAME, pid=os.getpid())
    beat.stop()
    nxt = common.next_agent(NAME)
    while True:
        try:
            r = client.call_json(SyscallOp.SYS_RECV, {"max": 1, "wait": True, "timeout_ms": WAIT_MS, "lease": True},
                                 wait=WAIT_MS / 1000)
        except ConnectionClosedError:
            return 0
        for msg in r.get("messages", []):
            token = msg["message"]
            ledger.take(token)
            if ledger.time_up():
                common.finish(ledger)
            else:
                turn()
                client.send_message(ledger.token(), to=nxt)
            client.call_json(SyscallOp.SYS_RECV, {"max": 0})  # acknowledge: the item is handed on


if __name__ == "__main__":
    sys.exit(main())
