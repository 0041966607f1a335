"""Anchors: the same bars and the same SMA-crossover rule through other backtest engines and ours.

``python -m tests.benchmarks anchors [--reps N]`` runs, in one benchmark run, on the bundled
sample (``data/sample/um_futures_1m_2025``: 5 symbols x 6,480 one-minute klines = 32,400 bars,
read once with the project's reader :func:`streams.adapters.market_files.open_data_set`):

* **backtrader** (event-driven loop, ``runonce=False``; and its default ``runonce=True``, where
  indicators are computed in a vectorised pass first): one ``bt.Strategy`` over the 5 feeds,
  long-only, entering at a 10/30 SMA cross up, leaving at a cross down;
* **vectorbt** (``Portfolio.from_signals`` on a 5-column close frame, entries/exits from the same
  crosses; timed warm, after one run that compiles its numba kernels, which is reported apart);
* **NautilusTrader** (its ``BacktestEngine``, a Strategy with its ``SimpleMovingAverage``
  indicators, market orders on a Binance-like perpetual per symbol) in its own Python >= 3.12
  virtualenv (``.venv-nautilus``, created here with uv when a ``python3.12`` is found;
  :mod:`tests.benchmarks.anchors_nautilus` is the script it runs); skipped, saying why, without;
* **our runner** (:func:`streams.runner.run`, the whole in-process topology) with its signal
  source swapped: :class:`SmaCrossScorer` stands in for the ONNX ensemble through the runner's
  ``scorer`` argument (the ensemble stage's :class:`~streams.stages.ensemble.Scorer` protocol),
  voting BUY at a cross up and SELL at a cross down with probability 1, HOLD otherwise, from the
  close prices each feature row's window carries. Features, supervisor, strategy, risk, exits,
  execution and learning run as always, so this is the engine's cost per bar with a signal
  source as cheap as the anchors'; and the full ensemble for comparison.

Costs: the paper venue's taker fee (``QT_PAPER__TAKER_FEE``, 0.04%) and slippage (1 bp) in every
engine, the risk settings' starting equity as cash. The trades differ by design (the runner's
strategy, sizing, risk and exit stages decide what to do with a signal; the anchors go all in
and out): the figures compare engine cost per bar, and the signal counts show the rule is the
same. Timings: wall clock of the engine's run from bars in memory (backtrader, vectorbt,
Nautilus; building their data objects included) or from the files (the runner reads and
validates them inside its timed loop). Best of ``--reps``.

Writes ``tests/benchmarks/results/anchors.json`` and ``anchors.md``; reported, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results"
SAMPLE = ROOT / "data" / "sample" / "um_futures_1m_2025"
NAUTILUS_VENV = ROOT / ".venv-nautilus"
#: What the suite installs into NautilusTrader's own venv (it needs Python >= 3.12). Its bar
#: wrangler writes into ``DataFrame.values``, which pandas 3 (copy-on-write) makes read-only.
NAUTILUS_REQUIREMENTS = ("nautilus-trader==1.231.0", "pandas<3")
FAST, SLOW = 10, 30
SLIPPAGE = 0.0001  # the paper venue's 1 bp, as a fraction
MODEL = "sma_cross"


# --------------------------------------------------------------------------- the rule


def sma_cross(closes: npt.ArrayLike, fast: int = FAST, slow: int = SLOW) -> npt.NDArray[np.int8]:
    """Per bar: +1 where the fast SMA crosses above the slow one, -1 below, 0 otherwise.

    A cross at bar i: fast > slow at i and fast <= slow at i-1 (up), or the mirror (down);
    bars before the slow SMA and its predecessor exist (the first ``slow`` bars) are 0.
    """
    c = np.asarray(closes, dtype=np.float64)
    out = np.zeros(c.shape[0], dtype=np.int8)
    if c.shape[0] <= slow:
        return out
    csum = np.concatenate(([0.0], np.cumsum(c)))
    fast_ma = (csum[fast:] - csum[:-fast]) / fast  # fast_ma[j] = mean(c[j : j + fast])
    slow_ma = (csum[slow:] - csum[:-slow]) / slow
    diff = fast_ma[slow - fast :] - slow_ma  # diff[k] at bar k + slow - 1
    up = (diff[1:] > 0) & (diff[:-1] <= 0)
    down = (diff[1:] < 0) & (diff[:-1] >= 0)
    out[slow:] = up.astype(np.int8) - down.astype(np.int8)
    return out


def last_bar_cross(
    prices: npt.ArrayLike, fast: int = FAST, slow: int = SLOW
) -> npt.NDArray[np.int8]:
    """:func:`sma_cross` of each row's last bar, for rows of (N, W) prices (W > ``slow``)."""
    p = np.asarray(prices, dtype=np.float64)
    if p.shape[1] <= slow:
        raise ValueError(f"a window of {p.shape[1]} bars cannot show a {slow}-bar SMA cross")
    now = p[:, -fast:].mean(axis=1) - p[:, -slow:].mean(axis=1)
    before = p[:, -fast - 1 : -1].mean(axis=1) - p[:, -slow - 1 : -1].mean(axis=1)
    up = (now > 0) & (before <= 0)
    down = (now < 0) & (before >= 0)
    return up.astype(np.int8) - down.astype(np.int8)


def one_hot_votes(crosses: npt.NDArray[np.int8]) -> npt.NDArray[np.float32]:
    """(N, 3) probabilities in the ensemble's class order (SELL, HOLD, BUY), one-hot."""
    votes = np.zeros((crosses.shape[0], 3), dtype=np.float32)
    votes[np.arange(crosses.shape[0]), crosses.astype(np.int64) + 1] = 1.0
    return votes


class SmaCrossScorer:
    """The runner's signal source swapped: the SMA cross of the window's closes, as one model.

    A feature row's window holds ``100 * ln(close / last close)`` per bar (models/features.py),
    so ``exp(x / 100)`` is each close over the last one: a positive scale that leaves every
    SMA comparison as it is on the prices themselves.
    """

    names: tuple[str, ...] = (MODEL,)
    versions: dict[str, str] = {MODEL: f"{FAST}/{SLOW}"}  # noqa: RUF012 - read-only protocol

    def __init__(self) -> None:
        from models.features import FEATURE_VERSION, WINDOW_CHANNEL_NAMES

        self.feature_version = FEATURE_VERSION
        self._close = WINDOW_CHANNEL_NAMES.index("close")

    def score(self, tabular: np.ndarray | None, window: np.ndarray | None) -> dict[str, np.ndarray]:
        """One-hot votes of the rows' last bars."""
        if window is None:
            raise ValueError("the SMA rule reads the feature window")
        prices = np.exp(window[:, :, self._close].astype(np.float64) / 100.0)
        return {MODEL: one_hot_votes(last_bar_cross(prices))}


# --------------------------------------------------------------------------- the bars


def load_bars(data: Path) -> dict[str, dict[str, npt.NDArray[Any]]]:
    """Per symbol: event time (ms) and OHLCV arrays, through the project's reader."""
    from streams.adapters.market_files import open_data_set
    from streams.contracts.records import TickReceived

    rows: dict[str, list[tuple[int, float, float, float, float, float]]] = {}
    _, items = open_data_set(data)
    for item in items:
        if isinstance(item, TickReceived):
            rows.setdefault(item.symbol, []).append(
                (item.event_time_ms, item.open, item.high, item.low, item.close, item.volume)
            )
    out = {}
    for symbol, values in sorted(rows.items()):
        arr = np.asarray(values, dtype=np.float64)
        out[symbol] = {
            "time_ms": arr[:, 0].astype(np.int64),
            **{name: arr[:, i + 1] for i, name in enumerate(("open", "high", "low", "close"))},
            "volume": arr[:, 5],
        }
    return out


def best_of(reps: int, once: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``once()`` ``reps`` times (each returns ``seconds`` and figures); the fastest, all times."""
    runs = [once() for _ in range(reps)]
    best = min(runs, key=lambda r: r["seconds"])
    return best | {"runs_s": [r["seconds"] for r in runs]}


# --------------------------------------------------------------------------- the engines


def run_backtrader(
    bars: Mapping[str, Mapping[str, npt.NDArray[Any]]], cash: float, fee: float, runonce: bool
) -> dict[str, Any]:
    """backtrader over every symbol at once; seconds, trades, crosses seen, final value."""
    import backtrader as bt
    import pandas as pd

    class SmaCross(bt.Strategy):  # type: ignore[misc]
        def __init__(self) -> None:
            sma = bt.ind.SMA
            self.cross = {
                d: bt.ind.CrossOver(sma(d.close, period=FAST), sma(d.close, period=SLOW))
                for d in self.datas
            }
            self.crosses = 0
            self.share = 1.0 / len(self.datas)

        def next(self) -> None:
            for d, cross in self.cross.items():
                c = cross[0]
                if c == 0:
                    continue
                self.crosses += 1
                if c > 0 and not self.getposition(d):
                    self.order_target_percent(d, target=self.share * 0.95)
                elif c < 0 and self.getposition(d):
                    self.close(d)

    started = time.perf_counter()
    cerebro = bt.Cerebro(runonce=runonce, preload=True, stdstats=False)
    for symbol, b in bars.items():
        frame = pd.DataFrame(
            {k: b[k] for k in ("open", "high", "low", "close", "volume")},
            index=pd.to_datetime(b["time_ms"], unit="ms"),
        )
        cerebro.adddata(bt.feeds.PandasData(dataname=frame), name=symbol)
    cerebro.addstrategy(SmaCross)
    cerebro.broker.setcash(cash)
    cerebro.broker.setcommission(commission=fee)
    cerebro.broker.set_slippage_perc(SLIPPAGE)
    cerebro.addanalyzer(bt.analyzers.TradeAnalyzer, _name="trades")
    (strategy,) = cerebro.run()
    seconds = time.perf_counter() - started
    trades = strategy.analyzers.trades.get_analysis()
    return {
        "seconds": seconds,
        "crosses": strategy.crosses,
        "closed_trades": int(trades.get("total", {}).get("closed", 0)),
        "final_value": float(cerebro.broker.getvalue()),
    }


def run_vectorbt(
    bars: Mapping[str, Mapping[str, npt.NDArray[Any]]], cash: float, fee: float
) -> dict[str, Any]:
    """vectorbt's ``from_signals`` on a close frame of every symbol; seconds and figures."""
    import pandas as pd
    import vectorbt as vbt

    started = time.perf_counter()
    close = pd.DataFrame(
        {
            s: pd.Series(b["close"], index=pd.to_datetime(b["time_ms"], unit="ms"))
            for s, b in bars.items()
        }
    )
    fast = vbt.MA.run(close, FAST, short_name="fast")
    slow = vbt.MA.run(close, SLOW, short_name="slow")
    entries = fast.ma_crossed_above(slow)
    exits = fast.ma_crossed_below(slow)
    pf = vbt.Portfolio.from_signals(
        close, entries, exits, fees=fee, slippage=SLIPPAGE, init_cash=cash / close.shape[1],
        freq="1min",
    )  # fmt: skip
    value = float(pf.value().iloc[-1].sum())
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "crosses": int(entries.to_numpy().sum() + exits.to_numpy().sum()),
        "closed_trades": int(pf.trades.closed.count().sum()),
        "final_value": value,
    }


def run_ours(scorer: Any, settings: Any) -> dict[str, Any]:
    """Our in-process runner over the sample with ``scorer`` as its signal source."""
    from streams.contracts.records import SignalScored
    from streams.report import ReportBuilder
    from streams.runner import run

    builder = ReportBuilder(settings.risk.starting_equity_usd)
    crosses = 0

    def sink(record: Any) -> None:
        nonlocal crosses
        if isinstance(record, SignalScored) and record.action.value != "HOLD":
            crosses += 1
        builder.add(record)

    stats = run(SAMPLE, scorer, sink, settings, block_minutes=240, measure_latency=False)
    report = builder.build(model_versions=stats.model_versions)
    return {
        "seconds": stats.elapsed_s,
        "bars": stats.bars,
        "crosses": crosses,
        "closed_trades": report["counts"]["closed_trades"],
        "trades_sha256": report["trades_sha256"],
    }


def nautilus_python() -> tuple[Path | None, str]:
    """The interpreter of the suite's NautilusTrader venv, created if needed; or why not."""
    venv_python = NAUTILUS_VENV / "bin" / "python"
    wanted = " ".join(NAUTILUS_REQUIREMENTS)
    stamp = NAUTILUS_VENV / ".installed"
    if stamp.exists() and stamp.read_text() == wanted:
        return venv_python, ""
    base = python_312()
    if base is None:
        return None, "no python3.12 or python3.13 found (NautilusTrader needs Python >= 3.12)"
    # uv as the Makefile runs it (installed into the base python3), or one on PATH.
    uv = [shutil.which("uv") or ""] if shutil.which("uv") else ["python3", "-m", "uv"]
    steps = (
        [*uv, "venv", "-q", "--allow-existing", "--python", base, str(NAUTILUS_VENV)],
        [*uv, "pip", "install", "-q", "-p", str(venv_python), *NAUTILUS_REQUIREMENTS],
    )
    try:
        for step in steps:
            subprocess.run(step, check=True, capture_output=True, timeout=900)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        return None, f"could not install {wanted}: {exc} {detail.decode()[-300:]}"
    stamp.write_text(wanted)
    return venv_python, ""


def python_312() -> str | None:
    """The real path of a Python >= 3.12 interpreter, if any: on PATH, or one pyenv holds
    (its shims answer only for the versions pyenv selects)."""
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates = [shutil.which(n) for n in ("python3.12", "python3.13")]
    candidates += sorted(str(p) for p in pyenv.glob("3.1[2-9]*/bin/python3"))
    for found in candidates:
        if found is None:
            continue
        try:
            done = subprocess.run(
                [found, "-c", "import sys; print(sys.executable)"],
                capture_output=True, text=True, timeout=60, check=True,
            )  # fmt: skip
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError):
            continue
        return done.stdout.strip() or found
    return None


def run_nautilus(
    python: Path, bars_file: Path, cash: float, fee: float, reps: int
) -> dict[str, Any]:
    """:mod:`tests.benchmarks.anchors_nautilus` in the Nautilus venv; its JSON answer."""
    script = Path(__file__).with_name("anchors_nautilus.py")
    args = [str(python), str(script), str(bars_file), "--cash", str(cash), "--fee", str(fee)]
    args += ["--slippage", str(SLIPPAGE), "--fast", str(FAST), "--slow", str(SLOW)]
    args += ["--reps", str(reps)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"anchors_nautilus.py exited {done.returncode}: {done.stderr[-800:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# --------------------------------------------------------------------------- the suite


def bench(reps: int, engines: set[str], ensemble_reps: int) -> dict[str, Any]:
    """Every engine of ``engines`` on the sample (module doc)."""
    from tests.benchmarks.bench_topology import bench_settings

    base = bench_settings(0.5)
    fee = base.paper.taker_fee
    cash = base.risk.starting_equity_usd
    bars = load_bars(SAMPLE)
    n_bars = sum(len(b["close"]) for b in bars.values())
    expected = int(sum(np.abs(sma_cross(b["close"])).sum() for b in bars.values()))
    engines_out: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    load0 = os.getloadavg()[0]
    if "ours" in engines:
        settings = base.model_copy(update={"ensemble_weights": {MODEL: 1.0}})
        print("anchors: our runner, SMA signal source", flush=True)
        engines_out["ours_sma"] = best_of(reps, lambda: run_ours(SmaCrossScorer(), settings))
    if "ensemble" in engines and ensemble_reps > 0:
        from models.scorer import EnsembleScorer

        print("anchors: our runner, full ensemble", flush=True)
        scorer = EnsembleScorer.from_registry(base.registry_dir)
        engines_out["ours_ensemble"] = best_of(ensemble_reps, lambda: run_ours(scorer, base))
    if "backtrader" in engines:
        try:
            import backtrader  # noqa: F401
        except ImportError:
            skipped["backtrader"] = "not installed: install the bench extra (make bench)"
        else:
            print("anchors: backtrader", flush=True)
            for label, runonce in (("backtrader_event", False), ("backtrader_runonce", True)):
                engines_out[label] = best_of(
                    reps, lambda r=runonce: run_backtrader(bars, cash, fee, r)
                )
    if "vectorbt" in engines:
        try:
            import vectorbt  # noqa: F401
        except ImportError:
            skipped["vectorbt"] = "not installed: install the bench extra (make bench)"
        else:
            print("anchors: vectorbt", flush=True)
            cold = run_vectorbt(bars, cash, fee)  # compiles numba kernels
            engines_out["vectorbt"] = best_of(reps, lambda: run_vectorbt(bars, cash, fee)) | {
                "cold_s": cold["seconds"]
            }
    if "nautilus" in engines:
        python, why = nautilus_python()
        if python is None:
            skipped["nautilus"] = why
        else:
            print(f"anchors: NautilusTrader ({python})", flush=True)
            with tempfile.TemporaryDirectory(prefix="qt-anchors-") as tmp:
                bars_file = Path(tmp) / "bars.npz"
                arrays = {f"{s}.{k}": v for s, b in bars.items() for k, v in b.items()}
                np.savez(bars_file, **arrays)
                try:
                    engines_out["nautilus"] = run_nautilus(python, bars_file, cash, fee, reps)
                except (RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
                    skipped["nautilus"] = str(exc)[:800]
    for res in engines_out.values():
        res["bars_per_s"] = n_bars / res["seconds"]
    ref = engines_out.get("ours_sma", {}).get("bars_per_s")
    if ref:
        for res in engines_out.values():
            res["ratio_to_ours_sma"] = res["bars_per_s"] / ref
    return {
        "suite": "anchors",
        "data": str(SAMPLE.relative_to(ROOT)),
        "bars": n_bars,
        "symbols": sorted(bars),
        "rule": f"SMA {FAST}/{SLOW} crossover",
        "crosses_in_closes": expected,
        "fees": {"taker_fee": fee, "slippage": SLIPPAGE},
        "cash": cash,
        "reps": reps,
        "engines": engines_out,
        "skipped": skipped,
        "load_1m": {"before": load0, "after": os.getloadavg()[0]},
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(),
        },
    }


LABELS = {
    "ours_sma": "our runner, SMA signal source (whole topology in-process)",
    "ours_ensemble": "our runner, full four-model ensemble",
    "backtrader_event": "backtrader, event-driven (`runonce=False`)",
    "backtrader_runonce": "backtrader, default (`runonce=True`: vectorised indicators)",
    "vectorbt": "vectorbt `Portfolio.from_signals` (warm)",
    "nautilus": "NautilusTrader `BacktestEngine`",
}


def markdown(res: Mapping[str, Any]) -> str:
    """``anchors.md``: the figures of ``anchors.json`` as a table."""
    lines = [
        "# Anchors benchmark",
        "",
        f"`{res['data']}` ({res['bars']:,} bars, {', '.join(res['symbols'])}), {res['rule']} "
        f"({res['crosses_in_closes']:,} crosses in the closes), taker fee "
        f"{res['fees']['taker_fee']:.2%} and slippage {res['fees']['slippage']:.2%} everywhere, "
        f"{res['cash']:,.0f} USDT; best of {res['reps']}; {res['machine']['cpus']} CPUs shared "
        f"with other work (1-minute load {res['load_1m']['before']:.1f} before, "
        f"{res['load_1m']['after']:.1f} after). Generated by `python -m tests.benchmarks anchors`; "
        "method in the suite's docstring, findings in `docs/performance.md`.",
        "",
        "| engine | bars/s | x our runner (SMA) | best s | crosses seen | closed trades |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, r in res["engines"].items():
        ratio = r.get("ratio_to_ours_sma")
        lines.append(
            f"| {LABELS.get(key, key)} | {r['bars_per_s']:,.0f} | "
            f"{'n/a' if ratio is None else f'{ratio:,.2f}'} | {r['seconds']:.3f} | "
            f"{r.get('crosses', 'n/a')} | {r.get('closed_trades', 'n/a')} |"
        )
    if "vectorbt" in res["engines"]:
        lines += ["", f"vectorbt's first (cold) run: {res['engines']['vectorbt']['cold_s']:.2f} s "
                  "(numba compilation)."]  # fmt: skip
    for key, why in res["skipped"].items():
        lines += ["", f"**{key}: not run**: {why}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the suite and write ``results/anchors.json`` and ``anchors.md``."""
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks anchors")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--ensemble-reps", type=int, default=1, help="0: skip the full ensemble")
    parser.add_argument(
        "--engines", default="ours,ensemble,backtrader,vectorbt,nautilus", help="comma list"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    engines = {e.strip() for e in args.engines.split(",") if e.strip()}
    res = bench(args.reps, engines, args.ensemble_reps)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "anchors.json").write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    (args.out / "anchors.md").write_text(markdown(res), encoding="utf-8")
    print(markdown(res))
    return 0
