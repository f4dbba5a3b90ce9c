"""CrewAI ring: a sequential Crew of 5 Agents / 5 Tasks (a0 -> ... -> a4), kicked off again
and again until the time budget is used; each kickoff is one lap of the ring and every
task gets the previous task's output as context.

CrewAI has no built-in fake model, so each agent gets `ScriptedLLM`, a minimal custom
`crewai.llms.base_llm.BaseLLM` (the documented extension point for custom LLMs) that
answers in CrewAI's ReAct text format: first "Action: work_<agent>", then, once it sees the
tool's Observation, a "Final Answer".  No network, no LiteLLM.  Telemetry/tracing are
disabled by environment (OTEL_SDK_DISABLED, CREWAI_DISABLE_TELEMETRY, CREWAI_TRACING_ENABLED)
because the machine has no network.  The agent's `work` tool is a crewai BaseTool whose
_run is plain synchronous user code.
"""
import os
import sys

os.environ.setdefault("OTEL_SDK_DISABLED", "true")
os.environ.setdefault("CREWAI_DISABLE_TELEMETRY", "true")
os.environ.setdefault("CREWAI_DISABLE_TRACKING", "true")
os.environ.setdefault("CREWAI_TRACING_ENABLED", "false")
os.environ.setdefault("CREWAI_STORAGE_DIR", "/tmp/clove-rivals-crewai")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

from importlib.metadata import version  # noqa: E402
from typing import Any  # noqa: E402

from crewai import Agent, Crew, Process, Task  # noqa: E402
from crewai.llms.base_llm import BaseLLM  # noqa: E402
from crewai.tools import BaseTool  # noqa: E402

ledger = common.Ledger()


class ScriptedLLM(BaseLLM):
    """Deterministic stand-in for a chat model: call the agent's tool once, then answer."""

    tool_name: str = "work"

    def call(self, messages, tools=None, callbacks=None, available_functions=None,
             from_task=None, from_agent=None, response_model=None, **kw: Any) -> str:
        text = messages if isinstance(messages, str) else str(messages[-1].get("content", ""))
        if "Observation" in text or "observation" in text.lower()[-400:]:
            return "Thought: I now know the final answer\nFinal Answer: work handed on"
        return f"Thought: I must do my unit of work\nAction: {self.tool_name}\nAction Input: {{}}"

    def supports_function_calling(self) -> bool:
        return False

    def supports_stop_words(self) -> bool:
        return True

    def get_context_window_size(self) -> int:
        return 128000


class Work(BaseTool):
    name: str = "work"
    description: str = "Do this agent's unit of work on the item it holds."
    agent_name: str = ""

    def _run(self, **kwargs: Any) -> str:
        return ledger.work(self.agent_name)


def make_tool(agent_name: str) -> BaseTool:
    return Work(name=f"work_{agent_name}", agent_name=agent_name)


def build_crew() -> Crew:
    agents, tasks = [], []
    for name in common.AGENTS:
        tool = make_tool(name)
        agent = Agent(role=f"agent {name}", goal="process the work item and hand it on",
                      backstory="one stage of a ring", llm=ScriptedLLM(model="scripted", tool_name=tool.name),
                      tools=[tool], allow_delegation=False, verbose=False, max_iter=3)
        task = Task(description=f"{name}: take the current work item, process it with {tool.name}, hand it on",
                    expected_output="a note saying the item was handed on", agent=agent,
                    context=[tasks[-1]] if tasks else None)
        agents.append(agent)
        tasks.append(task)
    return Crew(agents=agents, tasks=tasks, process=Process.sequential, verbose=False)


def main() -> None:
    crew = build_crew()
    ledger.start("crewai", version("crewai"))
    laps = 0
    while not ledger.time_up():
        crew.kickoff()
        laps += 1
    common.finish(ledger, laps=laps)


if __name__ == "__main__":
    main()
