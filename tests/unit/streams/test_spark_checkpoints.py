"""Spark checkpoints are kept per topic prefix, so projects sharing a state dir stay apart."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamrec.settings import Settings
from streams.spark.job import ITEM_LONG, ITEM_SHORT, checkpoint_dir, prefix_folder


def _settings(state_dir: Path, prefix: str) -> Settings:
    return Settings(state_dir=state_dir, topic_prefix=prefix)


def test_two_prefixes_in_one_state_dir_get_separate_checkpoints(tmp_path: Path) -> None:
    demo = checkpoint_dir(_settings(tmp_path, "streamrec."), ITEM_LONG)
    test = checkpoint_dir(_settings(tmp_path, "t-1234."), ITEM_LONG)
    assert demo != test
    assert demo.is_relative_to(tmp_path / "spark") and test.is_relative_to(tmp_path / "spark")
    assert not demo.is_relative_to(test) and not test.is_relative_to(demo)


def test_same_prefix_resumes_same_checkpoint_and_queries_stay_apart(tmp_path: Path) -> None:
    a = checkpoint_dir(_settings(tmp_path, "streamrec."), ITEM_LONG)
    assert a == checkpoint_dir(_settings(tmp_path, "streamrec."), ITEM_LONG)
    assert a != checkpoint_dir(_settings(tmp_path, "streamrec."), ITEM_SHORT)
    assert a.parent.name == "streamrec."


def test_offsets_written_for_one_prefix_are_invisible_to_another(tmp_path: Path) -> None:
    demo = checkpoint_dir(_settings(tmp_path, "streamrec."), ITEM_LONG)
    other = checkpoint_dir(_settings(tmp_path, "other."), ITEM_LONG)
    (demo / "offsets").mkdir(parents=True)
    (demo / "offsets" / "0").write_text("{}")
    assert not other.exists()


@pytest.mark.parametrize(
    ("first", "second"),
    [("a/b", "a_b"), ("../x", "x"), ("", "prefix"), ("a b", "a_b"), ("é.", "_.")],
)
def test_unsafe_prefixes_map_to_distinct_plain_folder_names(first: str, second: str) -> None:
    one, two = prefix_folder(first), prefix_folder(second)
    assert one != two
    for name in (one, two):
        assert "/" not in name and name not in ("", ".", "..")
        assert not name.startswith(".")


def test_unsafe_prefix_stays_under_the_state_dir(tmp_path: Path) -> None:
    path = checkpoint_dir(_settings(tmp_path, "../../escape/"), ITEM_LONG)
    assert path.resolve().is_relative_to((tmp_path / "spark").resolve())
    assert path.parent.parent == tmp_path / "spark"
