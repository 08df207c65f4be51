"""The SDK behind `orca.client.Client`: the transport (endpoints, failover, retries), connections (sockets,
TLS), streams, waiting, one module per kind of resource, and the client configuration (named contexts
in `~/.orca/config.toml`). `orca.client` stays the public entry point."""
