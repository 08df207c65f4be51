"""Settings for every tier.

Hypothesis runs without its per-example deadline: a deadline is a timed assertion, and on a shared
2-core box (or a busy CI runner) a slow example says nothing about the code under test.
"""

from __future__ import annotations

from hypothesis import settings

settings.register_profile("orca", deadline=None)
settings.load_profile("orca")
