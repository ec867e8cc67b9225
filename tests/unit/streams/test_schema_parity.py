"""The event contract (pydantic) and its two other spellings agree: the archive's Parquet
schemas (``streams.archiver``) and the Spark job's JSON struct (``streams.spark.windows``).

A field added to an event and forgotten in either fails here, not in a consumer at run time.
"""

from __future__ import annotations

import pyarrow as pa
import pytest
from pydantic import BaseModel

from streams.archiver import SCHEMAS
from streams.events import EVENT_TYPES, Event, RecommendedItem
from streams.spark.windows import event_schema

KAFKA_COLUMNS = {"kafka_partition", "kafka_offset"}


def _wire_names(model: type[BaseModel]) -> set[str]:
    """The JSON field names of a model, as they go over the wire."""
    return {field.alias or name for name, field in model.model_fields.items()}


def _family(arrow: pa.DataType) -> str:
    if pa.types.is_integer(arrow):
        return "int"
    if pa.types.is_floating(arrow):
        return "float"
    if pa.types.is_string(arrow):
        return "str"
    return "list" if pa.types.is_list(arrow) else str(arrow)


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES.values(), key=lambda c: c.__name__))
def test_archive_schema_holds_every_field_but_the_version(event_type: type[Event]) -> None:
    archived = set(SCHEMAS[event_type].names) - KAFKA_COLUMNS
    assert archived == _wire_names(event_type) - {"schema"}


def test_archive_schema_types_follow_the_contract() -> None:
    for event_type, schema in SCHEMAS.items():
        for name in _wire_names(event_type) - {"schema"}:
            annotation = str(event_type.model_fields[name].annotation)
            family = _family(schema.field(name).type)
            if "int" in annotation:
                assert family == "int", (event_type.__name__, name)
            elif "float" in annotation:
                assert family == "float", (event_type.__name__, name)


def test_spark_struct_holds_every_field_of_every_event() -> None:
    struct = event_schema()
    wanted = set().union(*(_wire_names(t) for t in EVENT_TYPES.values()))
    assert set(struct.fieldNames()) == wanted
    items = struct["items"].dataType.elementType
    assert set(items.fieldNames()) == _wire_names(RecommendedItem)
    assert set(SCHEMAS[EVENT_TYPES["recommendations"]].field("items").type.value_type.names) == (
        _wire_names(RecommendedItem)
    )
