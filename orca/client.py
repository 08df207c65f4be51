"""The public Python SDK of orca: `Client(api, token).deploy([...])`.

It speaks only HTTP (stdlib `http.client`, no event loop), so sync scripts, the CLI, the tests, the
benchmarks and the drill can all use it. This module is the stable public name; the code lives in
`orca.sdk`: `transport` (masters, failover, retries), `connections` (sockets, TLS), `streams`, `waiting`,
and one module per kind of resource (`services`, `cluster`, `access`).
What it does for the caller, and why:

- **Several masters.** `api` may list every master. A connection failure or a `503 CLUSTER_NOT_READY`
  (no leader yet, or a write that could not commit) moves on to the next URL; after a full pass it
  sleeps a short, growing backoff. `retries` bounds the number of extra passes, so a call never hangs.
- **Leader redirects.** A follower answers writes with `307` and `Location: <leader><path>`; the client
  re-sends the same method and body there (up to `MAX_REDIRECTS` hops) and remembers that leader, so
  the next write goes straight to it.
- **Exactly-once writes.** Every POST/PUT/DELETE carries an `Idempotency-Key`, made once per logical
  call and reused on every retry of that call: a write retried across a leader failover is applied once
  and the retry gets the first result back.

Errors: every failure is an `ApiError` carrying the server's envelope; a connection that
never succeeded becomes `ApiError(status=0, code="UNREACHABLE")`.

Thread-safety: keep-alive connections are kept per thread, so one Client may be shared, though one
Client per thread is the simplest pattern.
"""

from __future__ import annotations

from orca.sdk.client import Client
from orca.sdk.errors import ApiError, error_from_response
from orca.sdk.transport import API_PREFIX, MAX_REDIRECTS
from orca.sdk.waiting import is_converged, rollout_failure

__all__ = ["ApiError", "Client", "MAX_REDIRECTS", "API_PREFIX", "error_from_response", "is_converged",
           "rollout_failure"]
