"""The web console's static files (`static/`), served by every master at `/ui/` (orca.master.console)."""
