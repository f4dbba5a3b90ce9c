"""Adapters that run framework code as Clove agents (issue 16): each is an optional extra.

``clove_sdk`` itself needs only the standard library; a module here imports its framework when it is
imported, never before, so ``import clove_sdk`` stays as light as it was:

- ``clove_sdk.integrations.langchain`` — LangChain / LangGraph (``pip install clove-sdk[langchain]``)
- ``clove_sdk.integrations.crewai`` — CrewAI (``pip install clove-sdk[crewai]``)
- ``clove_sdk.integrations.autogen`` — AutoGen AgentChat (``pip install clove-sdk[autogen]``)
- ``clove_sdk.integrations.run`` — any of their objects (or a callable) served as a Clove agent:
  ``python -m clove_sdk.integrations.run module:attr`` (stdlib only; ``clove run --entry``, clove.yaml
  ``entry:``)
"""
