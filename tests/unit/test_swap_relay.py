"""The swaps relay: a swap or shadow record on ``models.events`` reaches every partition of
``models.swaps``.

The relay runs through its real :class:`~streams.agents.durable.StageRuntime`, as in a worker;
the whole path (relay, ensemble instances on both partitions, crashes) is checked against the
in-process runner in ``tests/unit/test_durable_state.py``.
"""

from __future__ import annotations

from streams.agents.base import Decoder, RawEvent
from streams.agents.durable import DictStore, StageRuntime
from streams.agents.swaps import build
from streams.config import Settings
from streams.contracts.codec import topic_codec
from streams.contracts.records import ModelEventRecorded
from streams.topics import Topic
from streams.topology import BuildContext, stage_spec
from streams.vocabulary import ModelEventKind


def _event(kind: ModelEventKind, t: int = 1_747_846_800_000) -> ModelEventRecorded:
    return ModelEventRecorded(event_id=f"xgboost:v1:{kind.value}:{t}", model="xgboost",
                              version="v1", event_time_ms=t, kind=kind, detail="test")  # fmt: skip


def test_swaps_and_shadow_records_are_copied_once_per_partition_and_other_kinds_are_not() -> None:
    spec = stage_spec("swaps")
    runtime = StageRuntime(spec, lambda: build(BuildContext(Settings(partitions=3))), DictStore(),
                           Decoder(""))  # fmt: skip
    codec = topic_codec(Topic.MODELS_EVENTS)
    kinds = [ModelEventKind.ROLLED_BACK, ModelEventKind.LOADED, ModelEventKind.DRIFT_DETECTED,
             ModelEventKind.PROMOTED, ModelEventKind.RETRAINED, ModelEventKind.SHADOW_STARTED,
             ModelEventKind.SHADOW_SCORED, ModelEventKind.PROMOTION_REFUSED]  # fmt: skip
    raw = [RawEvent(Topic.MODELS_EVENTS.value, 0, i, b"xgboost", codec.encode(_event(k)), {})
           for i, k in enumerate(kinds)]  # fmt: skip
    [out] = runtime.handle(raw)
    copies = [(i.partition, i.value.kind, i.seq) for i in out.items if i.value is not None]
    assert all(i.topic is Topic.MODELS_SWAPS and i.source == "swaps/0" for i in out.items)
    assert copies == [
        (0, ModelEventKind.ROLLED_BACK, 1), (1, ModelEventKind.ROLLED_BACK, 2),
        (2, ModelEventKind.ROLLED_BACK, 3), (0, ModelEventKind.PROMOTED, 4),
        (1, ModelEventKind.PROMOTED, 5), (2, ModelEventKind.PROMOTED, 6),
        (0, ModelEventKind.SHADOW_STARTED, 7), (1, ModelEventKind.SHADOW_STARTED, 8),
        (2, ModelEventKind.SHADOW_STARTED, 9), (0, ModelEventKind.PROMOTION_REFUSED, 10),
        (1, ModelEventKind.PROMOTION_REFUSED, 11), (2, ModelEventKind.PROMOTION_REFUSED, 12),
    ]  # fmt: skip
    assert all(i.value == _event(i.value.kind) for i in out.items)  # the record itself
    # a redelivered record (offset already applied) is not copied again
    assert runtime.handle(raw[:1])[0].items == []
