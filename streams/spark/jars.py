"""Spark's Kafka connector jars: fetched from Maven Central once, then used offline.

`deploy/spark/pom.xml` names the connector; `mvn dependency:copy-dependencies` copies it and
the dependencies pyspark lacks into ``settings.spark_jars_dir``. A stamp of the pom's hash
makes later calls skip Maven entirely, so the job starts without network once installed.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

from streamrec.settings import Settings

SPARK_POM = Path(__file__).resolve().parents[2] / "deploy" / "spark" / "pom.xml"
_STAMP = ".pom-sha256"


class SparkJarsError(RuntimeError):
    """The connector jars are missing and Maven could not fetch them."""


def ensure_spark_jars(settings: Settings) -> list[Path]:
    """The connector jars, fetching them with Maven when the pom changed or none are there."""
    jars = settings.spark_jars_dir
    digest = hashlib.sha256(SPARK_POM.read_bytes()).hexdigest()[:16]
    stamp = jars / _STAMP
    if not (stamp.exists() and stamp.read_text() == digest):
        _fetch(jars, digest)
    found = sorted(jars.glob("*.jar"))
    if not any(p.name.startswith("spark-sql-kafka-0-10_") for p in found):
        raise SparkJarsError(f"no spark-sql-kafka-0-10 jar in {jars}; run `make install-spark`")
    return found


def _fetch(jars: Path, digest: str) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise SparkJarsError(
            f"Spark's Kafka connector is not in {jars} and `mvn` was not found on PATH. "
            "Install Maven (Debian: apt-get install maven) and run `make install-spark`."
        )
    if jars.exists():
        shutil.rmtree(jars)
    jars.mkdir(parents=True)
    result = subprocess.run(
        [
            mvn,
            "-q",
            "-B",
            "-f",
            str(SPARK_POM),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={jars}",
            "-DincludeScope=runtime",
        ],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise SparkJarsError(
            f"Maven could not fetch Spark's Kafka connector:\n{result.stdout}{result.stderr}"
        )
    (jars / _STAMP).write_text(digest)
