"""Watching the serving set: its reference distributions in the registry, drift and online
quality of live traffic against them, and the retrain they trigger (docs/design.md,
"Monitoring")."""
