"""Test agent (test_langchain.py): a LangGraph graph of four model steps, checkpointed with
CloveCheckpointSaver, run by the frameworks' interpreter as a sandboxed Clove agent.

On its first run it SIGKILLs itself as step 3 begins; the kernel restarts it (restart_policy), and it
resumes from its last checkpoint (after step 2) instead of starting over. It then stores
``lc-resume-result`` (global scope): the answers, how many times it ran, where it resumed.
"""

import operator
import os
import signal
from typing import Annotated, TypedDict

from langgraph.graph import END, START, StateGraph

from clove_sdk import CloveClient
from clove_sdk.integrations.langchain import ChatClove, CloveCheckpointSaver

STEPS = 4
CRASH_AT = 3

client = CloveClient(strict=True)
# how many times this agent started: agent-scope keys outlive its restarts
runs = (client.fetch("runs", scope="agent")["value"] or 0) + 1
client.store("runs", runs, scope="agent")
model = ChatClove(client=client)


class State(TypedDict):
    answers: Annotated[list[str], operator.add]


def step(i: int):
    def node(state: State) -> dict:
        if i == CRASH_AT and runs == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return {"answers": [model.invoke(f"step {i}").content]}

    return node


builder = StateGraph(State)
previous = START
for i in range(1, STEPS + 1):
    builder.add_node(f"step{i}", step(i))
    builder.add_edge(previous, f"step{i}")
    previous = f"step{i}"
builder.add_edge(previous, END)
graph = builder.compile(checkpointer=CloveCheckpointSaver(client))

config = {"configurable": {"thread_id": "resume"}}
pending = list(graph.get_state(config).next)  # not empty: an earlier run was cut short
out = graph.invoke(None if pending else {"answers": []}, config, durability="sync")
client.store("lc-resume-result", {"answers": out["answers"], "runs": runs, "resumed_at": pending})
