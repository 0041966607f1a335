"""The real topology worker (:func:`streams.app.run_worker`) with one stage that fails for real.

``python -m tests.integration.apps.crashing_worker`` runs the stock worker, except that the
stage named by ``QTTEST_CRASH_STAGE`` raises from its ``end_batch`` once it has ended
``QTTEST_CRASH_AFTER`` batches: outside any one record's handling, where no dead letter can
isolate it (the way a broken merge or a broken send fails). ``QTTEST_CRASH_MODE=exit`` kills
the process with SIGKILL there instead (a worker that dies: OOM killer, segfault). The wall
time of the failure goes to ``QTTEST_CRASH_MARK`` so the test can measure how fast the demo
notices.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any


class HarnessCrash(RuntimeError):
    """The failure this harness provokes."""


def _install() -> None:
    import streams.agents.registry as registry

    stage = os.environ["QTTEST_CRASH_STAGE"]
    after = int(os.environ.get("QTTEST_CRASH_AFTER", "20"))
    mode = os.environ.get("QTTEST_CRASH_MODE", "raise")
    mark = Path(os.environ["QTTEST_CRASH_MARK"])
    builders = registry.stage_builders
    ended = [0]  # batches ended by every instance of the stage together

    def builders_with_a_failing_stage(settings: Any, *stages: Any) -> dict[str, Any]:
        built = builders(settings, *stages)
        real_build = built[stage]

        def build_failing() -> Any:
            target = real_build()
            real_end = target.end_batch

            def end_batch(out: Any) -> None:
                real_end(out)
                ended[0] += 1
                if ended[0] == after:
                    mark.write_text(repr(time.time()))
                    if mode == "exit":
                        os.kill(os.getpid(), signal.SIGKILL)
                    raise HarnessCrash(f"{stage} failed after {after} batches (test harness)")

            target.end_batch = end_batch
            return target

        built[stage] = build_failing
        return built

    registry.stage_builders = builders_with_a_failing_stage


def main() -> None:
    """Install the failing stage, then run the stock worker."""
    from streams.app import run_worker

    _install()
    run_worker(loglevel="warning")


if __name__ == "__main__":
    main()
