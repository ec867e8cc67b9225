"""Spark Structured Streaming windows beside the Faust agents (`streamrec spark`).

``windows`` holds the DataFrame logic (parsing, signals, sliding-window aggregates, the
rows pushed to Feast) and runs the same on a static DataFrame; ``job`` wires it to the Kafka
source, checkpoints and the Feast push sources; ``ledger`` makes each micro-batch count once;
``session`` and ``jars`` build the SparkSession with the Kafka connector fetched by Maven.
"""
