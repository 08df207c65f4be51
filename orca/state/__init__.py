"""Replicated state: the pure state machine (`machine`) and read helpers (`views`)."""
