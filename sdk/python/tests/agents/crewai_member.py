"""Test agent: one CrewAI crew member served as a Clove agent (clove_sdk.integrations.crewai.serve_member).

    crewai_member.py <role> <goal> [<tool>,<tool>…]

Its model is CloveLLM (THINK: the test's provider stub answers), its tools the named Clove tools. The
adapter is imported before crewai: in an agent it turns telemetry off and gives CrewAI a writable home.
"""

import sys

from clove_sdk.integrations.crewai import CloveLLM, clove_tools, serve_member

from crewai import Agent  # noqa: E402 (after the adapter, see above)


def main() -> None:
    role, goal = sys.argv[1], sys.argv[2]
    tools = [t for t in (sys.argv[3] if len(sys.argv) > 3 else "").split(",") if t]
    agent = Agent(
        role=role,
        goal=goal,
        backstory=f"the {role} of a small crew; each member is its own Clove agent",
        llm=CloveLLM(),
        tools=clove_tools(include=tools) if tools else [],
        allow_delegation=False,
        max_iter=4,
        verbose=False,
    )
    print(f"crew member {role!r} serving", flush=True)
    serve_member(agent)


if __name__ == "__main__":
    main()
