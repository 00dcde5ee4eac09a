"""Tools inside the container: what ``mesh_tool`` runs, journaled so it never runs twice.

* :mod:`~meshagent.runtime.tools.spec` — :class:`ToolSpec`, :class:`ToolManifest` (the tools
  an agent declares, in its module's ``meshagent.manifest`` section) and :class:`ToolResult`
  (answer + file writes: what the journal records);
* :mod:`~meshagent.runtime.tools.registry` — :class:`ToolBox`, the per-agent dispatcher;
* :mod:`~meshagent.runtime.tools.files`, :mod:`~meshagent.runtime.tools.unidiff`,
  :mod:`~meshagent.runtime.tools.embed_search` — the built-in tools;
* :mod:`~meshagent.runtime.tools.wasi_tool` — WASI programs as tools, each run in its own sandbox;
* :mod:`~meshagent.runtime.tools.store` — content-addressed tool modules and the shipped tools;
* :mod:`~meshagent.runtime.tools.runtime` — what a node shares among its agents' tools;
* :mod:`~meshagent.runtime.tools.sections` — reading and writing the manifest section;
* :mod:`~meshagent.runtime.tools.manifest_file` — ``tools.toml`` for ``meshagent build --tools``.
"""
