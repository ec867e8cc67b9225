"""Where the repository's own files are: the Feast declarations and the deploy recipes."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
FEATURE_REPO = REPO_ROOT / "feature_repo"
DEPLOY = REPO_ROOT / "deploy"

# The prepared datasets (`streamrec data prepare`): one folder per source, each holding
# the time-ordered events a replay produces and, when the source has one, its catalogue.
# Not to be confused with the archive of the topics (`<data>/archive`, written by
# `streamrec archive`), which holds everything that reached Kafka, live events included.
DATASETS = "datasets"
EVENTS_FILE = "events.parquet"
ITEMS_FILE = "items.parquet"
# The truth of a generated dataset's planted drift (``synthetic:...,switchers=F``).
SWITCHES_FILE = "switches.parquet"


def datasets_dir(data_dir: Path) -> Path:
    return Path(data_dir) / DATASETS


def dataset_dir(data_dir: Path, name: str) -> Path:
    """Folder of one prepared dataset: ``<data_dir>/datasets/<name>``."""
    return datasets_dir(data_dir) / name


def dataset_events(data_dir: Path, name: str) -> Path:
    return dataset_dir(data_dir, name) / EVENTS_FILE


def dataset_items(data_dir: Path, name: str) -> Path:
    return dataset_dir(data_dir, name) / ITEMS_FILE


def dataset_switches(data_dir: Path, name: str) -> Path:
    return dataset_dir(data_dir, name) / SWITCHES_FILE


# The archive of the topics (`streamrec archive`): ``<data_dir>/archive/<topic-name>``.
ARCHIVE = "archive"


def archive_topic_dir(data_dir: Path, topic: str) -> Path:
    """Folder of one topic's archive (``streams.archiver`` writes it)."""
    return Path(data_dir) / ARCHIVE / topic
