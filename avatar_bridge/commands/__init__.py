"""The command-line shell: one module per subcommand, each with ``configure_parser`` and ``run_command``.

The engine (:mod:`avatar_bridge.pipeline`, :mod:`avatar_bridge.outputs` and the stage modules) never
imports from here; :mod:`avatar_bridge.cli` routes each subcommand to its module.
"""
