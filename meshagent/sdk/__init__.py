"""The Python agent SDK: the ``meshagent:agent`` WIT world and the module agents import.

* ``wit/agent.wit`` — the world: the ``host`` interface mirrors ``meshagent/agents/meshagent.h``;
* ``python/meshagent_agent.py`` — what a Python agent imports (bundled into the component);
* :mod:`meshagent.sdk.build` — ``meshagent build agent.py -o agent.wasm`` (componentize-py).
"""
