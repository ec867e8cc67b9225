"""The SparkSession of the windows job: small on one machine, a cluster by configuration."""

from __future__ import annotations

from typing import TYPE_CHECKING

from streamrec.settings import Settings
from streams.spark.jars import ensure_spark_jars

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def build_session(settings: Settings, app_name: str = "streamrec-spark") -> SparkSession:
    """A SparkSession on ``settings.spark_master`` with the Kafka connector on spark.jars.

    The jars come from the local Maven cache (no ``--packages`` download at run time).
    Shuffle partitions and driver memory stay small: the default machine has two cores.
    """
    from pyspark.sql import SparkSession

    jars = ensure_spark_jars(settings)
    session = (
        SparkSession.builder.appName(app_name)
        .master(settings.spark_master)
        .config("spark.jars", ",".join(str(p) for p in jars))
        .config("spark.driver.memory", settings.spark_driver_memory)
        .config("spark.sql.shuffle.partitions", str(settings.spark_shuffle_partitions))
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.streaming.stopGracefullyOnShutdown", "true")
        # Window state in RocksDB (off the JVM heap, spilled to the checkpoint's disk): the
        # default provider keeps every state version on the heap, and a replayed history
        # (100k events, each in 12 + 24 sliding windows) ran a 1 GB driver out of memory.
        .config(
            "spark.sql.streaming.stateStore.providerClass",
            "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider",
        )
        # Event times and windows are UTC; keep the driver's JVM from guessing otherwise.
        # A larger thread stack: stopping a query mid-batch formats its (long, 24-window)
        # plan through a recursive regex that overflows the default 1 MB stack.
        .config("spark.driver.extraJavaOptions", "-Duser.timezone=UTC -Xss4m")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("WARN")
    return session
