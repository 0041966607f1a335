"""The dashboard in a real headless Chromium (Debian's package, driven by Playwright).

Two sources, as an operator meets them:

* a finished run folder (the in-process runner over the bundled real data, written like a
  demo's: report.json, trades.csv, equity.png, dashboard.json) and a second run of the same
  data beside it: every page renders it, the signal filters work, the runs page shows the two
  side by side with equal ``trades_sha256``;
* a replay in progress on the project's real Kafka (``quantum-trader demo``'s own code with its
  ``--dashboard`` hook): signals, positions and the equity curve appear and update in place
  (the page is never reloaded), halt and resume go through the confirmation dialog, reach
  ``control.commands`` and the overview shows the new state (the risk stage's stored state);
  the pipeline page shows the worker's stages with their stored state; the learning page's
  Q-table heatmap and bandit arms are the strategy stage's stored state, cell for cell, as
  :func:`~streams.agents.durable.read_stage_documents` reads it from the changelog.

Screenshots of every page land in ``test-artifacts/dashboard/`` (CI keeps them).
"""

from __future__ import annotations

import contextlib
import io
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streams.adapters.market_files import TimeWindow, parse_time_bound

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "sample" / "um_futures_1m_2025"
REGISTRY = ROOT / "models" / "registry"
ARTIFACTS = ROOT / "test-artifacts" / "dashboard"
CHROMIUM = Path("/usr/bin/chromium")
#: The flags that work on these machines (no network but loopback: nothing in the background).
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.is_file(),
        reason="no /usr/bin/chromium: `apt-get install -y chromium chromium-driver` (.ci/run does)",
    ),
    pytest.mark.skipif(
        not (REGISTRY / "index.json").is_file() or not SAMPLE.is_dir(),
        reason="needs the bundled sample data and a promoted model registry",
    ),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def shoot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def rows(page: Any, table: str) -> int:
    return int(page.locator(f"#{table} tbody tr").count())


# ----------------------------------------------------------------------- a finished run


def write_runner_run(run_dir: Path) -> dict[str, Any]:
    """A run folder of the in-process runner, with the demo's dashboard.json."""
    from models.scorer import EnsembleScorer
    from streams.config import Settings, SupervisorPolicy, run_configuration
    from streams.dashboard.model import ReadModel
    from streams.dashboard.sources import write_snapshot
    from streams.report import ReportBuilder, write_run
    from streams.runner import run

    settings = Settings(supervisor=SupervisorPolicy(gate="confidence", min_confidence=0.5))
    builder, board = ReportBuilder(10_000.0), ReadModel(10_000.0)

    def sink(record: Any) -> None:
        builder.add(record)
        board.apply(record)

    window = TimeWindow(parse_time_bound("2025-05-21"), parse_time_bound("2025-05-22T12:00"))
    stats = run(SAMPLE, EnsembleScorer.from_registry(REGISTRY), sink, settings,
                ("BTCUSDT", "ETHUSDT", "SOLUSDT"), window)  # fmt: skip
    report = builder.build(
        model_versions=stats.model_versions,
        latency_ns=stats.latency_ns,
        extra={"config": run_configuration(settings)},
    )
    write_run(run_dir, report, builder.trades)
    write_snapshot(run_dir, board)
    return report


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    write_runner_run(runs / "first")
    shutil.copytree(runs / "first", runs / "second")  # the same trades: equal hashes
    return runs


@contextlib.contextmanager
def dashboard_on(source: Any, runs: Path) -> Iterator[str]:
    from streams.brokers.embedded import free_port
    from streams.commands.dashboard import context_for
    from streams.config import Settings
    from streams.dashboard.server import serving_in_thread

    ctx = context_for(source, Settings(runs_dir=runs))
    with serving_in_thread(ctx, "127.0.0.1", free_port()) as url:
        yield url


def test_a_finished_run_on_every_page(page: Any, runs_dir: Path) -> None:
    from streams.dashboard.server import Source
    from streams.dashboard.sources import load_run_folder

    report = load_run_folder(runs_dir / "first").report
    with dashboard_on(Source(run=load_run_folder(runs_dir / "first")), runs_dir) as url:
        page.goto(f"{url}/#overview")
        page.wait_for_function("document.querySelector('#equity-chart canvas') !== null")
        assert "finished run first" in page.inner_text("#source")
        trades = report["counts"]["closed_trades"]
        assert page.get_attribute("#equity-chart", "data-points") == str(trades)
        assert rows(page, "trades") == min(trades, 50)
        assert page.is_disabled("#btn-halt")  # no broker behind a finished run
        shoot(page, "run-overview")

        page.click("nav a[data-view=signals]")
        page.wait_for_selector("#signals tbody tr")
        page.select_option("#f-outcome", "APPROVED")
        outcomes = page.locator("#signals tbody td.outcome").all_inner_texts()
        assert outcomes and set(outcomes) == {"APPROVED"}
        assert len(outcomes) == report["counts"]["approvals"]
        page.select_option("#f-symbol", "ETHUSDT")
        assert set(page.locator("#signals tbody tr").evaluate_all(
            "rows => rows.map(r => r.dataset.symbol)")) <= {"ETHUSDT"}  # fmt: skip
        shoot(page, "run-signals")

        page.click("nav a[data-view=models]")
        page.wait_for_selector("#registry tbody tr")
        assert rows(page, "registry") == 4
        assert rows(page, "balance") == 4  # three symbols and all
        shoot(page, "run-models")

        page.click("nav a[data-view=learning]")
        page.wait_for_selector("#qtable tbody td[title]")
        assert page.locator("#qtable td[title$='updates']").count() > 0
        assert page.locator("#bandit tbody td").count() > 0
        # the in-process runner has no stored state: the rebuild from the rewards, and it says so
        assert page.get_attribute("#l-source", "data-kind") == "rewards"
        assert "rebuilt from learning.rewards" in page.inner_text("#l-source")
        shoot(page, "run-learning")

        page.click("nav a[data-view=pipeline]")
        page.wait_for_selector("#pipeline tbody tr")
        shoot(page, "run-pipeline")

        page.click("nav a[data-view=runs]")
        page.wait_for_selector("#runs tbody tr[data-run=second]")
        page.check("tr[data-run=first] input[name=run-a]")
        page.check("tr[data-run=second] input[name=run-b]")
        page.wait_for_selector("#hash-verdict")
        assert "trades_sha256 equal" in page.inner_text("#hash-verdict")
        assert page.locator("#compare img").count() == 2
        shoot(page, "run-compare")


# ------------------------------------------------------------------- a replay in progress


def heatmap_cells(page: Any) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """The symbol shown, its Q-table cells and bandit arms, as the page holds them."""
    return tuple(
        page.evaluate(
            """() => {
            const q = {}, arms = {};
            for (const td of document.querySelectorAll('#qtable td[data-n]')) {
              const state = td.closest('tr').dataset.state;
              (q[state] = q[state] || {})[td.dataset.mult] =
                [Number(td.dataset.q), Number(td.dataset.n)];
            }
            for (const td of document.querySelectorAll('#bandit td[data-count]')) {
              arms[td.closest('tr').dataset.regime + '/' + td.dataset.strategy] =
                [Number(td.dataset.value), Number(td.dataset.count)];
            }
            return [document.querySelector('#qtable').dataset.symbol, q, arms];
          }"""
        )
    )


def stored_cells(bootstrap: str, app_id: str, prefix: str, symbol: str) -> tuple[Any, Any]:
    """The same cells from the strategy stage's changelog, read independently of the page."""
    from streams.agents.durable import read_stage_documents
    from streams.config import SizingConfig
    from streams.stages.strategy import StrategyState

    labels = [repr(m) for m in SizingConfig().multipliers]
    for doc in read_stage_documents(bootstrap, app_id, prefix, "strategy").values():
        data = doc.document["handler"]["symbols"].get(symbol)
        if data is None:
            continue
        st = StrategyState.from_dict(data)
        q = {
            key: {labels[i]: [v, st.qtable.visits[key][i]] for i, v in enumerate(values)
                  if st.qtable.visits[key][i]}
            for key, values in st.qtable.q.items()
        }  # fmt: skip
        arms = {k: [a.value, a.count] for k, a in st.selector.arms.items()}
        return q, arms
    return None, None


def assert_heatmap_is_the_stored_state(page: Any, bootstrap: str, app_id: str, prefix: str) -> None:
    """Cell for cell (exact floats); the state moves on while the replay runs, so retry a while
    until the page and the changelog show the same flush."""
    import time

    last: Any = None
    for _ in range(40):
        symbol, q, arms = heatmap_cells(page)
        expected = stored_cells(bootstrap, app_id, prefix, symbol)
        if expected == (q, arms):
            assert q and all("/d" in state for state in q)  # full states, drawdown bucket too
            return
        last = (symbol, (q, arms), expected)
        time.sleep(1.0)
    raise AssertionError(f"the heatmap never matched the stored state: {last}")


@pytest.mark.kafka
def test_a_replay_in_progress_updates_in_place_and_halts(
    page: Any, kafka_bootstrap: str, tmp_path: Path
) -> None:
    from rich.console import Console

    from streams.brokers.embedded import free_port
    from streams.commands.dashboard import DemoDashboard
    from streams.config import Settings
    from streams.demo import DemoPlan, run_demo, with_min_confidence

    settings = with_min_confidence(
        Settings(kafka_bootstrap=kafka_bootstrap, runs_dir=tmp_path, partitions=2), 0.5
    )
    board = DemoDashboard(settings, "127.0.0.1", free_port(), lambda _text: None)
    window = TimeWindow(parse_time_bound("2025-05-21T00:00"), parse_time_bound("2025-05-21T20:00"))
    # The demo holds its end of stream until the live pages are checked: a fast (or a loaded
    # and slow) machine must not finish the run, and stop its worker, while they are.
    checked = threading.Event()
    plan = DemoPlan(window=window, symbols=("BTCUSDT", "ETHUSDT", "XRPUSDT"), timeout_s=900,
                    run_dir=tmp_path / "live", on_live=board.watch,
                    before_end=lambda _bootstrap, _prefix: checked.wait(1200))  # fmt: skip
    outcome: dict[str, Any] = {}

    def demo() -> None:
        try:
            outcome["result"] = run_demo(settings, plan, Console(file=io.StringIO()))
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=demo, daemon=True)
    thread.start()
    try:
        for _ in range(600):
            if board.url or "error" in outcome:
                break
            thread.join(0.1)
        assert board.url, f"the demo never went live: {outcome.get('error')}"
        assert board.context is not None
        prefix = board.context.source.info()["prefix"]
        page.goto(f"{board.url}/#signals")
        page.evaluate("window.__loadedOnce = true")  # gone if the page ever reloads
        page.wait_for_selector("#signals tbody tr", timeout=180_000)
        first = page.inner_text("#signals-count")
        page.wait_for_function(
            "t => document.querySelector('#signals-count').textContent !== t", arg=first,
            timeout=120_000,
        )  # fmt: skip
        shoot(page, "live-signals")

        page.click("nav a[data-view=overview]")
        page.wait_for_function(
            "Number(document.querySelector('#equity-chart').dataset.points || 0) > 0 || "
            "document.querySelectorAll('#positions tbody tr').length > 0",
            timeout=300_000,
        )
        shoot(page, "live-overview")
        assert page.inner_text("#ov-trading") == "NORMAL"
        assert "no universe events" in page.inner_text("#ov-universe")
        # a live ingest's universe refresh, on the run's universe.events: the overview lists it
        from streams.adapters.live.sink import kafka_live_sink
        from streams.contracts.records import UniverseChanged
        from streams.vocabulary import UniverseChangeKind, UniverseVerdict

        at = parse_time_bound("2025-05-21T01:00")
        sink = kafka_live_sink(kafka_bootstrap, prefix, partitions=2)
        sink.send_universe(UniverseChanged(
            event_id=f"universe:{at}:SOLUSDT", symbol="SOLUSDT", event_time_ms=at,
            change=UniverseChangeKind.JOINED, verdict=UniverseVerdict.SELECTED, rank=4,
            quote_volume=2.5e9, range_ratio=0.071, listed_days=1_500.0, universe_size=4,
            server_time_ms=at, reason="top 4 by 24h quote volume",
        ))  # fmt: skip
        sink.flush()
        page.wait_for_selector("#universe tbody tr[data-symbol=SOLUSDT][data-change=JOINED]",
                               timeout=60_000)  # fmt: skip
        assert "(1 members" in page.inner_text("#ov-universe")

        page.click("#btn-halt")
        assert "Send HALT to control.commands" in page.inner_text("#confirm-text")
        page.fill("#confirm-reason", "browser test halt")
        page.click("#confirm-ok")
        page.wait_for_function(
            "document.querySelector('#control-result').textContent.startsWith('HALT sent')"
        )
        page.wait_for_function(
            "document.querySelector('#ov-trading').textContent.startsWith('HALTED')",
            timeout=60_000,
        )
        assert page.locator("#commands tbody tr").first.inner_text().startswith("HALT")
        shoot(page, "live-halted")

        page.click("#btn-resume")
        page.click("dialog button[value=cancel]")  # a cancelled command is not sent
        # The dialog's close event is a queued task: the click can return before it ran.
        page.wait_for_function(
            "document.querySelector('#control-result').textContent === 'cancelled'"
        )
        assert page.inner_text("#ov-trading").startswith("HALTED")
        page.click("#btn-resume")
        page.click("#confirm-ok")
        page.wait_for_function(
            "document.querySelector('#ov-trading').textContent === 'NORMAL'", timeout=60_000
        )
        assert rows(page, "commands") == 2

        assert page.get_attribute("#ov-source", "data-source") == "state"

        page.click("nav a[data-view=pipeline]")
        page.wait_for_selector("#pipeline tbody tr[data-stage=risk]", timeout=30_000)
        page.wait_for_function(
            "(document.querySelector('#pipeline tr[data-stage=strategy] td.state-size') || {})"
            ".textContent?.includes('kB')",
            timeout=30_000,
        )
        shoot(page, "live-pipeline")

        page.click("nav a[data-view=learning]")
        page.wait_for_selector("#l-source[data-kind=state]", timeout=60_000)
        page.wait_for_selector("#qtable td[data-n]", timeout=400_000)
        assert_heatmap_is_the_stored_state(page, kafka_bootstrap, settings.app_id, prefix)
        shoot(page, "live-learning")
        # a candidate's settled rows on the run's signals.shadow: the models page weighs them
        import dataclasses

        from confluent_kafka import Producer

        from streams.contracts.codec import topic_codec
        from streams.contracts.examples import load_example
        from streams.topics import Topic, topic_name

        codec = topic_codec(Topic.SIGNALS_SHADOW)
        row = codec.decode_record(codec.encode(load_example(Topic.SIGNALS_SHADOW)))
        producer = Producer({"bootstrap.servers": kafka_bootstrap})
        for i in range(3):
            shadow_row = dataclasses.replace(row, event_time_ms=row.event_time_ms + i * 60_000)
            producer.produce(topic_name(Topic.SIGNALS_SHADOW, prefix), key=b"BTCUSDT",
                             value=codec.encode(shadow_row))  # fmt: skip
        assert producer.flush(30) == 0
        page.click("nav a[data-view=models]")
        shadow = f"#shadows tbody tr[data-shadow='{row.shadow_id}'][data-status=open]"
        page.wait_for_selector(shadow, timeout=60_000)
        cells = page.locator(f"{shadow} td").all_inner_texts()
        assert cells[1] == "xgboost=v3" and cells[2] == "3", cells
        assert cells[3].startswith("3 of 200"), cells
        assert "would refuse now: 3 shadow decisions" in cells[7], cells
        shoot(page, "live-shadow")
        assert page.evaluate("window.__loadedOnce === true"), "the page reloaded"

        checked.set()
        thread.join(900)
        assert "result" in outcome, f"the demo failed: {outcome.get('error')}"
        assert (tmp_path / "live" / "dashboard.json").is_file()
        # The page stamps both commands at the stream's progress (the last tick, as the demo
        # holds its end of stream): the risk stage applied them there, in the order they were
        # issued, each a mode change on policy.modes. Shown from the run folder afterwards,
        # as `demo --dashboard` does.
        board.show_run(outcome["result"].run_dir)
        page.click("nav a[data-view=overview]")
        page.wait_for_selector("#mode-changes tbody tr[data-mode=NORMAL]", timeout=60_000)
        halted = page.inner_text("#mode-changes tbody tr[data-mode=HALT]")
        assert "operator halt: browser test halt" in halted
        assert rows(page, "mode-changes") == 2
        # the risk stage's state stored at the end: its progress is the end of the stream
        assert "at event time end of stream" in page.inner_text("#ov-source")
    finally:
        checked.set()
        thread.join(900)
        board.close()
