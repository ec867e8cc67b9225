"""Datasets to the canonical event log (``data fetch``/``data prepare``), and the log to
Kafka at a chosen speed (``replay``). See ``replay.prepare`` and ``replay.replayer``."""
