"""Source specs, as typed on the command line, to loaders.

=================================  ==============================================
``movielens-100k``                 the fetched copy under ``<data_dir>/raw/ml-100k``
``movielens-100k:PATH``            a folder (or rating file) in RecBole or GroupLens layout
``amazon-books:PATH``              2018 JSON lines, 2023 JSONL or 2023 CSV, plain or gzip
``amazon-books:PATH,meta=META``    the same with a metadata file as the catalogue
``synthetic:users=N,items=M,...``  generated; see :mod:`replay.synthetic`
=================================  ==============================================
"""

from __future__ import annotations

from pathlib import Path

from replay import amazon, movielens, synthetic
from replay.loading import Source, SourceError

SOURCE_NAMES = (movielens.NAME, amazon.NAME, synthetic.NAME)
META_MARK = ",meta="


def source_name(spec: str) -> str:
    """The dataset name of a spec (the folder under ``log/``); SourceError if unknown."""
    name = spec.partition(":")[0].strip()
    if name not in SOURCE_NAMES:
        raise SourceError(
            f"unknown source {name!r}; expected one of {', '.join(SOURCE_NAMES)} "
            "(e.g. movielens-100k, amazon-books:PATH, synthetic:users=1000,items=500,events=1e5)"
        )
    return name


def open_source(spec: str, data_dir: Path, *, fetch: bool = True) -> Source:
    """The loader for ``spec``. ``movielens-100k`` without a path is fetched if missing."""
    name = source_name(spec)
    _, _, argument = spec.partition(":")
    argument = argument.strip()
    if name == movielens.NAME:
        if argument:
            return movielens.open_movielens(Path(argument).expanduser())
        folder = movielens.raw_dir(data_dir)
        if fetch:
            folder = movielens.fetch_movielens_100k(data_dir)
        return movielens.open_movielens(folder)
    if name == amazon.NAME:
        if not argument:
            raise SourceError(
                "amazon-books needs a file: amazon-books:PATH (e.g. Books_5.json.gz from the "
                "2018 Amazon Review Data, or a 2023 Books review JSONL/CSV file)"
            )
        reviews, _, meta = (
            argument.rpartition(META_MARK) if META_MARK in argument else (argument, "", "")
        )
        return amazon.AmazonSource(
            Path(reviews).expanduser(), Path(meta).expanduser() if meta else None
        )
    return synthetic.SyntheticSource(synthetic.parse_spec(argument))
