"""LangGraph (Python) ring of agents driven by langchain_core's FakeListChatModel.

Graph: a0 -> a1 -> a2 -> a3 -> a4 -> (a0 | END).  Each node = one agent turn: it asks its
fake chat model what to do, then runs its `work` tool (a langchain @tool) on the item in
the graph state and hands the item to the next node.  Compiled with defaults (no
checkpointer, no RetryPolicy), invoked once with a large recursion limit.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

from importlib.metadata import version  # noqa: E402
from typing import TypedDict  # noqa: E402

from langchain_core.language_models.fake_chat_models import FakeListChatModel  # noqa: E402
from langchain_core.messages import HumanMessage  # noqa: E402
from langchain_core.tools import tool  # noqa: E402
from langgraph.graph import END, StateGraph  # noqa: E402

ledger = common.Ledger()


class State(TypedDict):
    item: int
    last: str


def make_agent(name: str):
    model = FakeListChatModel(responses=[f"{name}: call work"])  # cycles forever

    @tool(f"work_{name}")
    def work() -> str:
        """Do this agent's unit of work on the current item."""
        return ledger.work(name)

    def node(state: State) -> dict:
        model.invoke([HumanMessage(content=f"{state['last']} -> you hold item {state['item']}")])
        out = work.invoke({})
        return {"item": ledger.item, "last": out}

    return node


def route(state: State) -> str:
    return END if ledger.time_up() else common.AGENTS[0]


def main() -> None:
    g = StateGraph(State)
    for name in common.AGENTS:
        g.add_node(name, make_agent(name))
    g.set_entry_point(common.AGENTS[0])
    for a, b in zip(common.AGENTS, common.AGENTS[1:]):
        g.add_edge(a, b)
    g.add_conditional_edges(common.AGENTS[-1], route)
    graph = g.compile()
    ledger.start("langgraph", version("langgraph"))
    graph.invoke({"item": 0, "last": "start"}, {"recursion_limit": 10_000_000})
    common.finish(ledger)


if __name__ == "__main__":
    main()
