"""orca: a Raft-clustered, multi-master container orchestrator."""

__version__ = "0.1.0"
__all__ = ["__version__"]
