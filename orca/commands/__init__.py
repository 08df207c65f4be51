"""The CLI's verb groups, one module each (Nomad's `command/` is the model).

Each module holds the handlers of one group of verbs (`cmd_*`: parsed args in, exit code out) and an
`add_parsers(verbs, common, verb)` that registers them; `orca.cli` builds the parser from the modules
listed in its `VERB_GROUPS` and runs the handler. `common` holds what every group shares (the client,
tables and JSON, durations, `UsageError`); `specfile` reads deploy files.
"""
