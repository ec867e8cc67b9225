"""MovieLens-100K: fetch it from PyPI (inside the RecBole wheel) and load either layout.

The machine that runs the demo may reach package registries but not grouplens.org, so the
fetch takes the copy of ml-100k that RecBole ships in its wheel ("atomic" files:
``ml-100k.inter``, ``ml-100k.item``...). The loader also reads the official GroupLens
layout (``u.data``, ``u.item``) for people who already have it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from replay.dataset import ITEMS_SCHEMA
from replay.loading import LoadStats, RowBuffer, SourceError, open_text, parse_float

NAME = "movielens-100k"
# Pinned so that every machine prepares byte-identical data.
RECBOLE_REQUIREMENT = "recbole==1.2.1"
WHEEL_PREFIX = "recbole/dataset_example/ml-100k/"
RECBOLE_INTER = "ml-100k.inter"
RECBOLE_ITEM = "ml-100k.item"
GROUPLENS_DATA = "u.data"
GROUPLENS_ITEM = "u.item"
# Column order of the 19 genre flags in GroupLens u.item (from the dataset README).
GROUPLENS_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)


def raw_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "raw" / "ml-100k"


def fetch_movielens_100k(data_dir: Path) -> Path:
    """Put ml-100k under ``<data_dir>/raw/ml-100k`` and return that folder.

    Idempotent: a folder that already holds the files is returned untouched. The files
    are extracted to a temporary sibling and renamed into place, so an interrupted fetch
    never leaves a half-written dataset that later runs would trust.
    """
    target = raw_dir(data_dir)
    if (target / RECBOLE_INTER).is_file() and (target / RECBOLE_ITEM).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".fetch-") as tmp:
        wheel = _download_recbole_wheel(Path(tmp) / "wheel")
        staging = Path(tmp) / "ml-100k"
        staging.mkdir()
        with zipfile.ZipFile(wheel) as archive:
            members = [n for n in archive.namelist() if n.startswith(WHEEL_PREFIX)]
            for member in members:
                filename = member[len(WHEEL_PREFIX) :]
                if not filename or "/" in filename:
                    continue
                (staging / filename).write_bytes(archive.read(member))
        if not (staging / RECBOLE_INTER).is_file():
            raise SourceError(f"{wheel.name} has no {WHEEL_PREFIX}{RECBOLE_INTER}")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    return target


def _download_commands(dest: Path) -> list[list[str]]:
    """pip of this interpreter, else pip on PATH, else pip run by uv: whichever exists."""
    args = ["download", RECBOLE_REQUIREMENT, "--no-deps", "--only-binary=:all:", "-d", str(dest)]
    commands = [[sys.executable, "-m", "pip", *args]]
    for pip in ("pip3", "pip"):
        found = shutil.which(pip)
        if found:
            commands.append([found, *args])
    uv = shutil.which("uv")
    if uv:
        commands.append([uv, "tool", "run", "pip", *args])
    return commands


def _download_recbole_wheel(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    for command in _download_commands(dest):
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as exc:
            failures.append(f"{command[0]}: {exc}")
            continue
        wheels = sorted(dest.glob("recbole-*.whl"))
        if done.returncode == 0 and wheels:
            return wheels[0]
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        failures.append(f"{' '.join(command[:3])}: exit {done.returncode}: {tail[0]}")
    raise SourceError(f"could not download {RECBOLE_REQUIREMENT} from PyPI: " + "; ".join(failures))


@dataclass
class MovieLensSource:
    """MovieLens-100K from a folder in either the RecBole or the GroupLens layout."""

    folder: Path
    layout: str  # "recbole" or "grouplens"
    name: str = NAME
    sorted_by_time: bool = False

    def batches(self, stats: LoadStats) -> Iterator[pa.Table]:
        if self.layout == "recbole":
            yield from _recbole_interactions(self.folder / RECBOLE_INTER, stats)
        else:
            yield from _grouplens_interactions(self.folder / GROUPLENS_DATA, stats)

    def catalogue(self) -> pa.Table | None:
        if self.layout == "recbole":
            path = self.folder / RECBOLE_ITEM
            return _recbole_items(path) if path.is_file() else None
        path = self.folder / GROUPLENS_ITEM
        return _grouplens_items(path) if path.is_file() else None


def open_movielens(path: Path) -> MovieLensSource:
    """The source at ``path``: a folder holding the files, or one of the rating files."""
    path = Path(path)
    folder = path.parent if path.is_file() else path
    if (folder / RECBOLE_INTER).is_file():
        return MovieLensSource(folder, "recbole")
    if (folder / GROUPLENS_DATA).is_file():
        return MovieLensSource(folder, "grouplens")
    raise SourceError(
        f"{path}: neither {RECBOLE_INTER} (RecBole layout) nor {GROUPLENS_DATA} "
        "(GroupLens layout) found; run `streamrec data fetch movielens-100k`"
    )


def _recbole_interactions(path: Path, stats: LoadStats) -> Iterator[pa.Table]:
    buffer = RowBuffer(stats)
    with open_text(path) as lines:
        header = [name.split(":")[0] for name in lines.readline().rstrip("\r\n").split("\t")]
        try:
            cols = [header.index(n) for n in ("user_id", "item_id", "rating", "timestamp")]
        except ValueError as exc:
            raise SourceError(f"{path}: header {header} lacks {exc}") from exc
        width = max(cols) + 1
        for number, line in enumerate(lines, start=2):
            line = line.rstrip("\r\n")
            if not line:
                continue
            stats.rows_read += 1
            fields = line.split("\t")
            if len(fields) < width:
                stats.reject(f"{path.name}:{number}", f"{len(fields)} fields, want {width}")
                continue
            _add_rating(buffer, f"{path.name}:{number}", number, [fields[c] for c in cols])
            if buffer.full():
                yield buffer.take()
    if len(buffer):
        yield buffer.take()


def _grouplens_interactions(path: Path, stats: LoadStats) -> Iterator[pa.Table]:
    buffer = RowBuffer(stats)
    with open_text(path) as lines:
        for number, line in enumerate(lines, start=1):
            line = line.rstrip("\r\n")
            if not line:
                continue
            stats.rows_read += 1
            fields = line.split("\t")
            if len(fields) != 4:
                stats.reject(f"{path.name}:{number}", f"{len(fields)} fields, want 4")
                continue
            _add_rating(buffer, f"{path.name}:{number}", number, fields)
            if buffer.full():
                yield buffer.take()
    if len(buffer):
        yield buffer.take()


def _add_rating(buffer: RowBuffer, where: str, row: int, fields: list[str]) -> None:
    user, item, rating_text, seconds_text = fields
    try:
        rating = parse_float(rating_text)
        time_ms = int(round(parse_float(seconds_text) * 1000))
    except ValueError as exc:
        buffer.stats.reject(where, f"not a number: {exc}")
        return
    buffer.add(where, row, user, item, time_ms, rating)


def _recbole_items(path: Path) -> pa.Table:
    ids: list[str] = []
    titles: list[str | None] = []
    categories: list[list[str]] = []
    with open_text(path) as lines:
        header = [name.split(":")[0] for name in lines.readline().rstrip("\r\n").split("\t")]
        id_col = header.index("item_id")
        title_col = header.index("movie_title") if "movie_title" in header else None
        class_col = header.index("class") if "class" in header else None
        for line in lines:
            fields = line.rstrip("\r\n").split("\t")
            if len(fields) <= id_col or not fields[id_col].strip():
                continue
            ids.append(fields[id_col].strip())
            titles.append(_field(fields, title_col))
            genres = _field(fields, class_col)
            categories.append(genres.split() if genres else [])
    return pa.table([ids, titles, categories], schema=ITEMS_SCHEMA)


def _grouplens_items(path: Path) -> pa.Table:
    ids: list[str] = []
    titles: list[str | None] = []
    categories: list[list[str]] = []
    # u.item is latin-1 (accented titles), pipe-separated: id|title|date|video date|url|flags
    with open_text(path, encoding="latin-1") as lines:
        for line in lines:
            fields = line.rstrip("\r\n").split("|")
            if len(fields) < 5 or not fields[0].strip():
                continue
            flags = fields[5 : 5 + len(GROUPLENS_GENRES)]
            ids.append(fields[0].strip())
            titles.append(fields[1].strip() or None)
            genres = zip(GROUPLENS_GENRES, flags, strict=False)
            categories.append([genre for genre, flag in genres if flag == "1"])
    return pa.table([ids, titles, categories], schema=ITEMS_SCHEMA)


def _field(fields: list[str], col: int | None) -> str | None:
    if col is None or col >= len(fields):
        return None
    return fields[col].strip() or None
