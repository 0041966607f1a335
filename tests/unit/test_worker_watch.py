"""What the demo reads from a worker's ``/health`` body while it waits for the drain."""

from __future__ import annotations

from streams.demo import DRAIN_TASK, drain_description
from streams.workers import crashed_stages, stalled_stages

#: A ``/health`` body as streams/observability/health.py writes it (the stalled worker of the
#: session-5 walkthrough: features waited 335 s with 5,962 ticks pending).
BODY = {
    "status": "ok",
    "stages": {
        "features": {"last_progress_s_ago": 335.3, "pending": 5962, "stalled": True,
                     "crashed": None},
        "ensemble": {"last_progress_s_ago": None, "pending": 40, "stalled": True, "crashed": None},
        "risk": {"last_progress_s_ago": 1.0, "pending": 0, "stalled": False, "crashed": None},
        "exits": {"last_progress_s_ago": 2.0, "pending": 0, "stalled": False, "crashed": "boom"},
    },
}  # fmt: skip


def test_stalled_stages_say_what_waits_and_for_how_long() -> None:
    assert stalled_stages(BODY) == {
        "features": "5962 pending, no progress for 335 s",
        "ensemble": "40 pending, never progressed",
    }
    assert stalled_stages({"status": "ok"}) == {} == stalled_stages({"stages": {"x": "odd"}})
    assert crashed_stages(BODY) == {"exits": "boom"}


def test_the_drain_bar_names_the_stalled_stages_only_while_there_are() -> None:
    assert drain_description({}) == DRAIN_TASK
    label = drain_description(stalled_stages(BODY))
    assert label.startswith(DRAIN_TASK) and "stalled: ensemble, features" in label
