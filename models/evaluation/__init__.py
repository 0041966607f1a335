"""Honest evaluation of the registered models on the held-out window: JSON + markdown + plots.

:func:`models.evaluation.report.write_report` loads the registered ONNX models through
``models.scorer.EnsembleScorer`` (the same path the workers use), scores every labelled bar of
the evaluation window, and compares each model, the runtime's ensemble vote and three baselines:

* ``always_hold``: predicts HOLD everywhere (never trades);
* ``momentum``: sign of the last 1-bar return (``ret_1``): BUY if up, SELL if down, HOLD if flat;
* ``buy_and_hold``: predicts BUY everywhere (long from the first bar to the last).

Classification metrics: accuracy, balanced accuracy, macro-F1, log loss (models only: the
baselines give no probabilities), per-class precision/recall/F1, confusion matrix, and the class
balance of predictions next to that of the labels (the system this replaces emitted 99 % SELL and
nobody noticed). Calibration: reliability of the top-class probability in 10 bins, with the
expected calibration error (ECE).

Trading rule ("hold until the signal changes", per symbol): after the close of bar *i* the
position becomes +1 for BUY, -1 for SELL, 0 for HOLD, and is held over bar *i+1* (earning
``close[i+1] / close[i] - 1``; entry at the close equals the next bar's open on these continuous
futures series up to one tick). Each change of position pays ``fee_rate`` per unit turned over
(a flip long -> short pays twice), the last position is closed at the end. The portfolio holds
the symbols with equal weight, rebalanced every bar. Sharpe is annualized from 1-minute returns
(sqrt(525 600)); on a few days of data it is a noisy figure, reported as is. Every flip pays
fees, so a signal that changes every few minutes is heavily penalized here: that is the point.

Second view, the trade the label describes ("fixed-horizon trades", per symbol): when flat, a
BUY/SELL opens a position at the signal bar's close and closes it ``horizon`` bars later; signals
during an open trade are ignored; each trade pays the round-trip fee. Reported: trade count, win
rate, mean and summed net return per trade (equal notional, not compounded).

Ensemble: the runtime's own vote (``streams.stages.ensemble.vote``, the function the ``ensemble``
stage calls) on every row: the members' probabilities weighted with the configured weights,
renormalized over the members present (missing members are listed in the report), action =
arg-max with an exact tie resolved to HOLD. The streaming supervisor may add confidence gates
and vetoes on top; this is the raw vote.

Nothing here is tuned on the evaluation window: weights, thresholds and models come in fixed.
Features for the first bars of the window are warmed up on history *before* the window (past
data only); labels need the bar ``horizon`` minutes later inside the window, so the last
``horizon`` minutes of the window have no row.

Modules, in the order a report is made: :mod:`~models.evaluation.scoring` (registry -> rows and
probabilities), :mod:`~models.evaluation.predictors` (models, runtime ensemble, baselines),
:mod:`models.metrics` and :mod:`~models.evaluation.trading` (what each predictor is worth),
:mod:`~models.evaluation.manifests` (what training recorded), :mod:`~models.evaluation.markdown`
and :mod:`~models.evaluation.plots` (rendering), :mod:`~models.evaluation.report` (the run).
"""
