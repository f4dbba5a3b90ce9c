"""AutoGen AgentChat ring: RoundRobinGroupChat of AssistantAgents on ReplayChatCompletionClient.

Each agent's replayed model output is a function call to that agent's `work` tool (a plain
synchronous Python function wrapped by FunctionTool, which AutoGen runs in a worker
thread).  reflect_on_tool_use=False, so a turn = one model call + one tool call.  The team
stops itself with TimeoutTermination(duration).  Defaults everywhere else.
"""
import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

from importlib.metadata import version  # noqa: E402

from autogen_agentchat.agents import AssistantAgent  # noqa: E402
from autogen_agentchat.conditions import TimeoutTermination  # noqa: E402
from autogen_agentchat.teams import RoundRobinGroupChat  # noqa: E402
from autogen_core import FunctionCall  # noqa: E402
from autogen_core.model_context import BufferedChatCompletionContext  # noqa: E402
from autogen_core.models import CreateResult, ModelFamily, ModelInfo, RequestUsage  # noqa: E402
from autogen_core.tools import FunctionTool  # noqa: E402
from autogen_ext.models.replay import ReplayChatCompletionClient  # noqa: E402

ledger = common.Ledger()
MAX_TURNS = 20000  # replay script length per agent; far more than a run can use


def make_agent(name: str) -> AssistantAgent:
    def work() -> str:
        return ledger.work(name)

    call = CreateResult(
        finish_reason="function_calls",
        content=[FunctionCall(id=f"{name}-call", arguments="{}", name=f"work_{name}")],
        usage=RequestUsage(prompt_tokens=0, completion_tokens=0),
        cached=False,
    )
    client = ReplayChatCompletionClient(
        [call] * MAX_TURNS,
        model_info=ModelInfo(vision=False, function_calling=True, json_output=False,
                             family=ModelFamily.UNKNOWN, structured_output=False),
    )
    return AssistantAgent(
        name,
        model_client=client,
        tools=[FunctionTool(work, name=f"work_{name}", description="do one unit of work")],
        reflect_on_tool_use=False,
        # keep the replay client's prompt small; the ring itself is unchanged
        model_context=BufferedChatCompletionContext(buffer_size=10),
    )


async def amain() -> None:
    agents = [make_agent(n) for n in common.AGENTS]
    team = RoundRobinGroupChat(agents, termination_condition=TimeoutTermination(common.DURATION))
    ledger.start("autogen-agentchat", version("autogen-agentchat"))
    errors = 0
    async for msg in team.run_stream(task="item 0 is ready for a0"):
        # report tool errors the framework turned into messages (it does not raise them)
        for r in getattr(msg, "content", []) if isinstance(getattr(msg, "content", None), list) else []:
            if getattr(r, "is_error", False):
                errors += 1
                common.emit(ev="tool_error_seen", source=getattr(msg, "source", "?"),
                            detail=str(getattr(r, "content", ""))[:200])
    common.finish(ledger, stop_reason=str(getattr(msg, "stop_reason", "")), tool_errors=errors)


if __name__ == "__main__":
    asyncio.run(amain())
