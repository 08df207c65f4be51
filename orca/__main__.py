"""`python -m orca` is the same as the `orca` console script."""

from orca.cli import main

raise SystemExit(main())
