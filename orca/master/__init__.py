"""The master: HTTP API, auth, and the leader's control loops around the replicated state."""
