"""The SDK's parts below `orca.client.Client`: the transport (connections, endpoint order) and the client
configuration (named contexts in `~/.orca/config.toml`). `orca.client` stays the public entry point."""
