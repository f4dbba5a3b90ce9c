"""Test agent: one AutoGen AgentChat AssistantAgent served as a Clove agent
(clove_sdk.integrations.autogen.serve_agent).

    autogen_member.py <name> <system message> [<tool>,<tool>…]

Its model client is CloveChatCompletionClient (THINK: the test's provider stub answers), its tools the
named Clove tools; its name is its Clove agent's name, so CloveRemoteAgent(<name>) reaches it.
"""

import sys

from autogen_agentchat.agents import AssistantAgent

from clove_sdk.integrations.autogen import CloveChatCompletionClient, clove_tools, serve_agent


def main() -> None:
    name, system = sys.argv[1], sys.argv[2]
    tools = [t for t in (sys.argv[3] if len(sys.argv) > 3 else "").split(",") if t]
    agent = AssistantAgent(
        name,
        model_client=CloveChatCompletionClient(),
        system_message=system,
        tools=clove_tools(include=tools) if tools else None,
        reflect_on_tool_use=bool(tools),
    )
    print(f"autogen agent {name!r} serving", flush=True)
    serve_agent(agent)


if __name__ == "__main__":
    main()
