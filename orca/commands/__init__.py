"""CLI verb groups, one module each (`orca.cli` builds the parser and registers them)."""
