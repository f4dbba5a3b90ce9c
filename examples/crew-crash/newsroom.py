"""The newsroom's three CrewAI crews, each served as its own Clove agent by the SDK's runner
(clove.yaml: `entry: newsroom:researcher` …, i.e. `python -m clove_sdk.integrations.run newsroom:researcher`).

Each crew is CrewAI's own Agent + Task + Crew, on a local fake model (FakeNewsLLM, a crewai BaseLLM that
answers in CrewAI's ReAct format from the task's text), so the example runs offline. The writer's crew has a
tool, `word_budget`, that hits a segfault on the writer's job number CRASH_ON_STORY (env; 0 = never), once:
the writer's process dies mid-task, Clove restarts it, and the job it was doing comes back to it (the runner
takes messages under a lease), so the lead gets its draft a few seconds late and the crew goes on.
"""

from __future__ import annotations

import ctypes
import os
import re
from typing import Any

# CrewAI keeps files under ~/.local and may phone home: an agent's HOME is read-only in its sandbox and it
# has no network, so use its own work directory and switch telemetry off (before crewai is imported).
if not os.access(os.path.expanduser("~"), os.W_OK):
    os.environ["HOME"] = os.getcwd()
for var, value in {"OTEL_SDK_DISABLED": "true", "CREWAI_DISABLE_TELEMETRY": "true",
                   "CREWAI_DISABLE_TRACKING": "true", "CREWAI_TRACING_ENABLED": "false"}.items():
    os.environ.setdefault(var, value)

from crewai import Agent, Crew, Process, Task  # noqa: E402
from crewai.llms.base_llm import BaseLLM  # noqa: E402
from crewai.tools import BaseTool  # noqa: E402


def field(text: str, name: str) -> str:
    """The value of a `NAME: value` line CrewAI copied from the task into the prompt."""
    m = re.search(rf"^{name}: (.*)$", text, re.MULTILINE)
    return m.group(1).strip() if m else "?"


class FakeNewsLLM(BaseLLM):
    """A deterministic stand-in for a chat model: each role writes its part from the task's fields; a role
    with a tool calls it once first (CrewAI's ReAct text format)."""

    role: str = "researcher"
    tool_name: str | None = None

    def call(self, messages, tools=None, callbacks=None, available_functions=None,
             from_task=None, from_agent=None, response_model=None, **kw: Any) -> str:
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        text = "\n".join(str(m.get("content", "")) for m in messages)
        # CrewAI appends the tool's result to the assistant's turn as "Observation: …"
        called = any(m.get("role") == "assistant" and "Observation:" in str(m.get("content", "")) for m in messages)
        if self.tool_name and not called:
            return f"Thought: I should check my word budget first\nAction: {self.tool_name}\nAction Input: {{}}"
        topic = field(text, "TOPIC")
        if self.role == "researcher":
            answer = f"three facts about {topic}"
        elif self.role == "writer":
            answer = f"{topic.capitalize()}, told in 40 words from {field(text, 'NOTES')}"
        else:
            answer = f"{field(text, 'DRAFT')} [edited]"
        return f"Thought: I now know the final answer\nFinal Answer: {answer}"

    def supports_function_calling(self) -> bool:
        return False

    def supports_stop_words(self) -> bool:
        return True

    def get_context_window_size(self) -> int:
        return 8192


class WordBudget(BaseTool):
    name: str = "word_budget"
    description: str = "How many words the piece may have."

    def _run(self, **kwargs: Any) -> str:
        # Which job this is, counted in the agent's work directory (it outlives the process): the writer
        # gets one job per story, so job N is story N.
        jobs = os.path.join(os.getcwd(), "jobs")
        n = int(open(jobs).read() or 0) + 1 if os.path.exists(jobs) else 1
        with open(jobs, "w") as f:
            f.write(str(n))
        crashed = os.path.join(os.getcwd(), "segfaulted-once")
        if str(n) == os.environ.get("CRASH_ON_STORY", "0") and not os.path.exists(crashed):
            open(crashed, "w").close()
            print(f"writer: word_budget hits a native bug on story {n}: segfault", flush=True)
            ctypes.string_at(0)  # a real invalid read: SIGSEGV, the whole process dies
        return "40 words"


def crew(role: str, goal: str, description: str, tools: list | None = None) -> Crew:
    tools = tools or []
    llm = FakeNewsLLM(model="fake-news", role=role, tool_name=tools[0].name if tools else None)
    agent = Agent(role=role, goal=goal, backstory=f"the newsroom's {role}", llm=llm, tools=tools,
                  allow_delegation=False, verbose=False, max_iter=3)
    task = Task(description=description, expected_output="one line of text", agent=agent)
    return Crew(agents=[agent], tasks=[task], process=Process.sequential, verbose=False)


researcher = crew("researcher", "find the facts", "Research the topic.\nTOPIC: {topic}")
writer = crew("writer", "write the piece", "Write the piece.\nTOPIC: {topic}\nNOTES: {notes}", tools=[WordBudget()])
editor = crew("editor", "polish the piece", "Edit the piece.\nTOPIC: {topic}\nDRAFT: {draft}")
