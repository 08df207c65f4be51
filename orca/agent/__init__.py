"""The worker side of orca: runs a node's containers and reports them to the leader.

The agent never imports the master (nor the master the agent); they share only `orca.protocol`.
`runtime` is the seam between the agent's reconcile logic and the container engine: `DockerRuntime`
for real, `FakeRuntime` for unit tests of that logic.
"""
