"""The CLI's verb groups, one module each (Nomad's `command/` is the model).

Each module holds the handlers of one group of verbs (`cmd_*`: parsed args in, exit code out) and an
`add_parsers(verbs, common, verb)` that registers them; `orca.cli` builds the parser from the modules
listed in its `VERB_GROUPS` and runs the handler. `common` holds what every group shares (the client,
global options, confirmations, error hints, `UsageError`), `output` how results are printed (tables,
`-o wide|json|yaml`, `-q`), `specfile` reads deploy files and `examples` has every verb's examples.
"""
