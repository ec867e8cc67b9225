"""Spark's Kafka connector jars: fetched from Maven Central once, then used offline.

`deploy/spark/pom.xml` names the connector; `mvn dependency:copy-dependencies` copies it and
the dependencies pyspark lacks into ``settings.spark_jars_dir``. A stamp of the pom's hash
makes later calls skip Maven entirely, so the job starts without network once installed.
"""

from __future__ import annotations

from pathlib import Path

from streamrec.infra.services import ServiceError, fetch_maven_dependencies
from streamrec.paths import DEPLOY
from streamrec.settings import Settings

SPARK_POM = DEPLOY / "spark" / "pom.xml"


class SparkJarsError(RuntimeError):
    """The connector jars are missing and Maven could not fetch them."""


def ensure_spark_jars(settings: Settings) -> list[Path]:
    """The connector jars, fetching them with Maven when the pom changed or none are there."""
    jars = settings.spark_jars_dir
    try:
        fetch_maven_dependencies(SPARK_POM, jars, "Spark's Kafka connector")
    except ServiceError as exc:
        raise SparkJarsError(f"Spark's Kafka connector is not in {jars}: {exc}") from exc
    found = sorted(jars.glob("*.jar"))
    if not any(p.name.startswith("spark-sql-kafka-0-10_") for p in found):
        raise SparkJarsError(f"no spark-sql-kafka-0-10 jar in {jars}; run `make install-spark`")
    return found
