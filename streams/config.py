"""Settings for every component, read once from the environment (prefix ``QT_``).

Defaults come from the seed system map (risk limits, TP ladder, symbols). Unknown ``QT_`` keys
are rejected so a typo in a deployment never silently falls back to a default.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.contracts.ticks import DEFAULT_MAX_EVENT_SKEW_MS

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SYMBOLS = (
    "BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT",
    "AVAXUSDT", "ADAUSDT", "LINKUSDT", "LTCUSDT", "BCHUSDT",
)  # fmt: skip


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RiskLimits(_Frozen):
    """Portfolio-wide limits enforced by the single-partition risk stage."""

    max_daily_drawdown: float = Field(0.15, gt=0, lt=1, description="of day-start equity")
    max_weekly_drawdown: float = Field(0.25, gt=0, lt=1, description="of week-start equity")
    max_margin_per_position_usd: float = Field(2000.0, gt=0)
    max_leverage: float = Field(30.0, ge=1)
    max_concurrent_positions: int = Field(20, ge=1)
    base_risk_fraction: float = Field(0.10, gt=0, le=1, description="risk per trade before sizing")
    max_symbol_concentration: float = Field(0.25, gt=0, le=1, description="equity share per symbol")
    max_open_correlation: float = Field(0.85, gt=0, le=1)
    starting_equity_usd: float = Field(10_000.0, gt=0)
    max_total_drawdown: float = Field(
        0.30, gt=0, lt=1,
        description="of peak equity, over any number of days/weeks: trips a circuit breaker "
        "that refuses new entries until an operator RESUME",
    )  # fmt: skip
    defensive_drawdown: float = Field(
        0.20, gt=0, lt=1, description="of peak equity: the policy layer turns DEFENSIVE"
    )
    defensive_size: float = Field(
        0.5, gt=0, le=1, description="margin multiplier of new entries in DEFENSIVE mode"
    )
    defensive_in_high_volatility: bool = Field(
        False, description="a decision in the HIGH_VOLATILITY regime is sized DEFENSIVE"
    )
    defensive_on_drift: bool = Field(
        False,
        description="a decision whose ensemble instance measures SIGNIFICANT drift from the "
        "models' training reference is sized DEFENSIVE (off by default: a partition of one or "
        "two symbols reads its own volatility regime changing as drift, docs/edge.md)",
    )

    defensive_veto_share: float = Field(
        0.95,  # above the training period's highest share at a decision (0.92, docs/edge.md)
        ge=0,
        le=1,
        description="a decision whose supervisor partition vetoed at least this share of its "
        "last BUY/SELL signals for model health (one-sided, missing or stale model, "
        "disagreement) is sized DEFENSIVE; 0 = off",
    )

    @model_validator(mode="after")
    def _defensive_before_halt(self) -> RiskLimits:
        if self.defensive_drawdown >= self.max_total_drawdown:
            raise ValueError("defensive_drawdown must be below max_total_drawdown")
        return self


class ExitPolicy(_Frozen):
    """TP ladder, stop and trailing defaults (ExitBrain v3.5 in the seed map)."""

    tp_fractions: tuple[float, ...] = (0.4, 0.4, 0.2)
    tp_distance_atr: tuple[float, ...] = (1.0, 1.6, 2.2)
    sl_distance_atr: float = Field(1.5, gt=0)
    trailing_callback: float = Field(0.008, gt=0, lt=1)

    @model_validator(mode="after")
    def _ladder_is_consistent(self) -> ExitPolicy:
        if abs(sum(self.tp_fractions) - 1.0) > 1e-9:
            raise ValueError("tp_fractions must sum to 1")
        if len(self.tp_fractions) != len(self.tp_distance_atr):
            raise ValueError("tp_fractions and tp_distance_atr must have the same length")
        return self


class SupervisorPolicy(_Frozen):
    """When the supervisor vetoes a signal (the seed's 99% SELL bias must be caught)."""

    bias_threshold: float = Field(0.70, gt=0.5, le=1, description="max share of one side")
    bias_window: int = Field(200, ge=10, description="last N non-HOLD signals considered")
    gate: Literal["edge", "confidence"] = Field(
        "edge",
        description="edge: trade only in the probability buckets whose walk-forward net-of-cost "
        "return has a bootstrap lower bound above zero (the manifests' gate table, "
        "docs/edge.md), NO_EDGE otherwise; confidence: the bare min_confidence gate",
    )
    min_confidence: float = Field(0.65, ge=0, le=1, description="the confidence gate's minimum")
    max_model_staleness_ms: int = Field(5 * 60_000, gt=0)
    max_disagreement: float = Field(0.5, ge=0, le=1)


class PromotionRule(_Frozen):
    """When a candidate model set may replace the champion (models/promotion.py)."""

    min_decisions: int = Field(200, ge=1, description="candidate decisions on the shadow rows")
    n_boot: int = Field(2000, ge=100, description="bootstrap resamples")
    ci: float = Field(0.90, gt=0, lt=1, description="two-sided interval; its lower bound decides")
    seed: int = 7
    shadow: Literal["stream", "held_back"] = Field(
        "stream",
        description="where the trainer's candidates are shadow-scored: on the stream beside "
        "the champion (signals.shadow; the topology's promotion stage decides) or on their "
        "held-back block (the trainer decides at once, as `models train --promote` does)",
    )
    max_shadow_ms: int = Field(
        7 * 86_400_000, gt=0, description="event time a stream shadow runs before it is decided"
    )


class DriftConfig(_Frozen):
    """Drift of the live features and predictions from the training reference (docs/drift.md)."""

    window_ms: int = Field(24 * 3_600_000, gt=0, description="rolling event-time window")
    slot_ms: int = Field(3_600_000, gt=0, description="the window moves and is measured per slot")
    min_samples: int = Field(500, ge=1, description="rows in the window before it is measured")
    moderate_psi: float = Field(0.1, gt=0, description="PSI of a moderate shift")
    significant_psi: float = Field(0.25, gt=0, description="PSI of a significant shift")
    worst: int = Field(3, ge=1, description="how many of the worst features an event names")


class TrainerConfig(_Frozen):
    """The retraining worker, ``quantum-trader trainer`` (docs/drift.md, "The retrain loop")."""

    schedule_ms: int = Field(
        24 * 3_600_000, ge=0, description="retrain when event time crosses a multiple; 0 = off"
    )
    drift_cooldown_ms: int = Field(
        6 * 3_600_000,
        ge=0,
        description="a DRIFT_DETECTED this soon after the last drift retrain "
        "(event time) does not retrain again",
    )
    lookback_days: float = Field(7.0, gt=0, description="train on the ticks of the last N days")
    models: tuple[str, ...] = ("xgboost", "lightgbm", "nhits", "patchtst")
    folds: int = Field(3, ge=0, description="walk-forward folds of each retrain")
    work_dir: Path | None = Field(
        None,
        description="where each retrain's data (CSV) and gate cache are kept "
        "(default <runs_dir>/trainer); the candidates' manifests point at it",
    )


class RewardConfig(_Frozen):
    """How a closed trade is scored."""

    clip: float = 1.0


class PaperConfig(_Frozen):
    """Costs and microstructure of the paper venue (Binance USD-M VIP0-like fees)."""

    taker_fee: float = 0.0004
    maker_fee: float = 0.0002
    slippage_bps: float = 1.0
    latency_ms: int = 0
    participation: float = 0.1  # max share of a bar's volume an entry takes per bar
    max_entry_bars: int = 5
    bar_ms: int = 60_000
    trail_after_tp1: bool = True


#: Hosts of Binance's real-money USD-M futures API: the testnet venue refuses them.
MAINNET_HOSTS = ("fapi.binance.com", "fstream.binance.com", "ws-fapi.binance.com")


class BinanceConfig(_Frozen):
    """The Binance USD-M futures testnet venue (``QT_MODE=testnet``), ``QT_BINANCE__*``.

    Endpoints are settings because they differ between sources and have moved (testnet, the
    newer demo environment); tests point them at a local fake. Real-money hosts are refused.
    """

    rest_url: str = Field(
        "https://testnet.binancefuture.com/fapi",
        description="REST base; python-binance appends /v1/order etc. "
        "(demo environment: https://demo-fapi.binance.com/fapi)",
    )
    user_stream_url: str = Field(
        "wss://stream.binancefuture.com/ws",
        description="user-data websocket base; the stream is <url>/<listenKey> "
        "(demo environment: wss://fstream.binancefuture.com/ws)",
    )
    margin_type: Literal["ISOLATED", "CROSSED"] = "ISOLATED"
    recv_window_ms: int = Field(5000, ge=1, le=60_000)
    request_timeout_s: float = Field(10.0, gt=0)
    listen_key_keepalive_s: float = Field(1800.0, gt=0, description="Binance: every 30 minutes")
    reconcile_every_s: float = Field(300.0, gt=0)
    gateway_silent_after_s: float = Field(
        900.0,
        gt=0,
        description="a worker's /ready fails when no venue.events record (the gateway's "
        "snapshots come every reconcile_every_s) arrived for this long",
    )
    user_stream_ping_s: float = Field(
        10.0, gt=0, description="how often the gateway pings the user-data stream"
    )
    user_stream_silent_s: float = Field(
        30.0, gt=0, description="no event and no pong for this long: reconnect and reconcile"
    )
    unknown_position: Literal["flatten", "adopt"] = Field(
        "flatten", description="a position found on the exchange that no decision of ours opened"
    )
    adopt_stop_fraction: float = Field(
        0.02, gt=0, lt=1, description="stop distance of an adopted position, of its entry price"
    )
    trail_after_tp1: bool = True
    working_type: Literal["MARK_PRICE", "CONTRACT_PRICE"] = "CONTRACT_PRICE"
    max_orders_10s: int = Field(240, ge=1, description="client cap; Binance allows 300 / 10 s")
    max_orders_1m: int = Field(1000, ge=1, description="client cap; Binance allows 1200 / min")
    max_weight_1m: int = Field(2000, ge=1, description="client cap; Binance allows 2400 / min")
    max_retries: int = Field(5, ge=0, description="per request, after timeouts and 5xx/429")

    @model_validator(mode="after")
    def _not_mainnet(self) -> BinanceConfig:
        for url in (self.rest_url, self.user_stream_url):
            host = url.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0].lower()
            if host in MAINNET_HOSTS:
                raise ValueError(
                    f"{url} is Binance's real-money API: the testnet venue refuses it "
                    "(live trading is not offered; use the testnet or demo URLs)"
                )
        return self


class RegimeConfig(_Frozen):
    """Thresholds of the regime detector (defaults measured as described in the module doc)."""

    high_vol_ratio: float = 1.8
    trend_threshold: float = 1.5
    baseline_bars: int = 1440  # one day of 1-minute bars
    warmup_bars: int = 30  # below this many samples the baseline is not trusted for HIGH_VOLATILITY


class CorrelationConfig(_Frozen):
    """Correlation rule parameters missing from :class:`RiskLimits`."""

    min_observations: int = 20  # fewer aligned returns: the rule abstains
    max_returns: int = 120  # returns kept per symbol


#: Position-size multipliers the sizing agent chooses from.
MULTIPLIERS: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5)


class SizingConfig(_Frozen):
    """Buckets, exploration and learning rate of the sizing agent."""

    multipliers: tuple[float, ...] = MULTIPLIERS
    confidence_edges: tuple[float, ...] = (0.70, 0.80, 0.90)  # 4 buckets: <.7, <.8, <.9, >=.9
    drawdown_edges: tuple[float, ...] = (0.02, 0.05, 0.10)  # fraction of peak/day-start equity
    epsilon: float = 0.1
    alpha: float = 0.1


class StrategyConfig(_Frozen):
    """Thresholds of the strategy rules."""

    band_low: float = 0.2  # band position at or under which price is "low in the range"
    band_high: float = 0.8
    rsi_oversold: float = 30.0
    rsi_overbought: float = 70.0
    pullback_rsi: float = 45.0  # up-trend pullback: RSI under this (down-trend: above 100 - this)
    momentum_atr: float = 0.5  # |momentum| must be >= this many ATR% for momentum_scalp
    scalp_confidence: float = 0.70


class SelectorConfig(_Frozen):
    """Exploration and learning rate of the meta selector."""

    epsilon: float = 0.1
    min_step: float = 0.05


class BiasConfig(_Frozen):
    """Bias-rule parameter missing from :class:`SupervisorPolicy`."""

    min_samples: int = 20  # non-HOLD signals needed in a window before the bias rule can fire


class ExitTuning(_Frozen):
    """Exit-planner parameters missing from :class:`ExitPolicy`."""

    low_confidence: float = 0.5
    high_confidence: float = 1.0
    scale_at_low: float = 0.8
    scale_at_high: float = 1.2
    max_margin_loss_at_stop: float = 0.32


class UniverseConfig(_Frozen):
    """Universe selection of the live edge (streams/adapters/live/universe.py).

    Off by default (``size`` 0: the universe is ``QT_SYMBOLS`` or ``--symbols``).
    """

    size: int = Field(0, ge=0, description="top N USD-M perpetuals by 24h quote volume; 0 = off")
    min_listing_days: float = Field(30.0, ge=0, description="listed at least this long ago")
    min_range: float = Field(
        0.02, ge=0, description="volatility floor: 24h (high - low) / last price"
    )
    quote_asset: str = "USDT"
    refresh_minutes: int = Field(
        60, ge=1, description="the selection is recomputed on this event-time grid"
    )
    wind_down_minutes: int = Field(
        1440,
        ge=0,
        description="a symbol that left keeps its stream this long (exchange time) so its "
        "open positions reach their exits; the risk stage refuses its new entries",
    )


class LiveConfig(_Frozen):
    """The live market-data edge (streams/adapters/live): endpoints, supervision, backfill.

    The endpoint defaults are python-binance's constants (USD-M klines on the routed
    ``/market`` path); point them at a local server to test without the internet.
    """

    market: Literal["futures", "spot"] = Field(
        "futures", description="USD-M perpetual futures klines, or spot klines"
    )
    futures_ws_url: str = "wss://fstream.binance.com/market"
    futures_rest_url: str = "https://fapi.binance.com"
    spot_ws_url: str = "wss://stream.binance.com:9443"
    spot_rest_url: str = "https://api.binance.com"
    max_streams_per_connection: int = Field(200, ge=1, le=200, description="Binance's limit")
    idle_timeout_s: float = Field(
        90.0, gt=0, description="a stream silent this long replaces its connection (> 60 s)"
    )
    rotate_after_s: float = Field(
        23 * 3600.0, gt=0, description="planned rotation before Binance's 24-hour cut"
    )
    stable_after_s: float = Field(60.0, gt=0, description="a session this long resets backoff")
    backoff_base_s: float = Field(0.5, gt=0)
    backoff_cap_s: float = Field(60.0, gt=0)
    ping_interval_s: float = Field(20.0, gt=0, description="our pings to the exchange")
    ping_timeout_s: float = Field(20.0, gt=0)
    overdue_grace_ms: int = Field(
        10_000, ge=0, description="a closed kline this late (exchange clock) is fetched over REST"
    )
    rest_page_limit: int = Field(1000, ge=1, le=1500, description="klines per REST request")
    rest_weight_budget: int = Field(
        1200, ge=10, description="request weight per minute we allow ourselves (futures: 2400)"
    )
    rest_timeout_s: float = Field(10.0, gt=0)
    warmup_minutes: int = Field(
        180,
        ge=0,
        le=1440,  # streams.contracts.ticks.MAX_HISTORY_BARS: what one tick may carry
        description="history fetched over REST for a symbol with nothing in market.ticks, "
        "or carried on the first kline of one that joins a running stream (feature windows "
        "warm before it trades)",
    )

    universe: UniverseConfig = UniverseConfig()
    metrics_port: int = Field(
        6067, ge=0, le=65535,
        description="the ingest's /metrics, /health and /ready (0 = no HTTP server)",
    )  # fmt: skip

    @model_validator(mode="after")
    def _backoff_is_consistent(self) -> LiveConfig:
        if self.backoff_base_s > self.backoff_cap_s:
            raise ValueError("live.backoff_base_s must not exceed live.backoff_cap_s")
        return self

    @property
    def ws_url(self) -> str:
        """Websocket base of the chosen market."""
        return self.futures_ws_url if self.market == "futures" else self.spot_ws_url

    @property
    def rest_url(self) -> str:
        """REST base of the chosen market."""
        return self.futures_rest_url if self.market == "futures" else self.spot_rest_url


class Settings(BaseSettings):
    """All runtime settings: ``QT_<FIELD>``, nested with ``__`` (``QT_RISK__MAX_LEVERAGE``)."""

    model_config = SettingsConfigDict(
        env_prefix="QT_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    kafka_bootstrap: str | None = Field(
        None, description="bootstrap servers; unset = start the embedded broker"
    )
    kafka_embedded: bool = Field(
        False, description="QT_KAFKA_BOOTSTRAP is the embedded Tansu broker: apply its workarounds"
    )
    schema_registry_url: str | None = Field(
        None, description="Confluent-compatible registry; unset = file registry in schemas/"
    )
    app_id: str = "quantum-trader"
    topic_prefix: str = Field(
        "", description="prepended to every topic name; isolates a replay or test run"
    )
    partitions: int = Field(4, ge=1)
    replication_factor: int = Field(1, ge=1)
    data_dir: Path = PROJECT_ROOT / "data"
    registry_dir: Path = PROJECT_ROOT / "models" / "registry"
    runs_dir: Path = PROJECT_ROOT / "runs"
    symbols: tuple[str, ...] = DEFAULT_SYMBOLS
    mode: Literal["paper", "testnet"] = "paper"
    binance_api_key: SecretStr | None = None
    binance_api_secret: SecretStr | None = None
    seed: int = 7
    feedback_lag_ms: int = Field(
        300_000,
        ge=0,
        description="closed trades and rewards reach risk/strategy this much event time later "
        "(docs/determinism.md); larger values let the Kafka topology pipeline more bars",
    )
    max_event_skew_ms: int = Field(
        DEFAULT_MAX_EVENT_SKEW_MS,
        gt=0,
        description="a tick this much event time ahead of its partition's newest accepted tick "
        "is dead-lettered (a bad clock); must exceed any real gap in the data "
        "(streams/contracts/ticks.py says why a week)",
    )
    state_flush_ms: int = Field(
        1_000,
        gt=0,
        description="a worker stores each stage's changed state (Faust table) at most this often "
        "(less often when a flush is slow: streams/app.py FLUSH_COST_FACTOR); "
        "inputs are committed only once their effects are stored (docs/determinism.md)",
    )
    producer_linger_ms: int = Field(
        0,
        ge=0,
        le=1000,
        description="how long a worker's producer waits to fill a batch before sending: every "
        "hop of the topology pays it (docs/performance.md measures 0 against a few ms)",
    )
    web_host: str = Field(
        "127.0.0.1", description="worker web server bind address; 0.0.0.0 in containers"
    )
    web_port: int = Field(6066, ge=0, le=65535)
    dashboard_host: str = Field(
        "127.0.0.1", description="`quantum-trader dashboard` bind address (it can halt trading)"
    )
    dashboard_port: int = Field(8050, ge=0, le=65535, description="the dashboard's web port")
    jaeger_ui_url: str | None = Field(
        None, description="Jaeger UI base URL: the dashboard links each decision's trace there"
    )
    stall_after_s: float = Field(
        30.0,
        gt=0,
        description="a stage with input pending and no progress for this long is not ready",
    )
    trace_file: Path | None = Field(
        None, description="JSON-lines span file when OTEL_EXPORTER_OTLP_ENDPOINT is unset"
    )
    journal_dsn: SecretStr | None = Field(
        None, description="PostgreSQL DSN of the journal (psycopg 3 conninfo or URL)"
    )
    risk: RiskLimits = RiskLimits()
    correlation: CorrelationConfig = CorrelationConfig()
    exits: ExitPolicy = ExitPolicy()
    exit_tuning: ExitTuning = ExitTuning()
    supervisor: SupervisorPolicy = SupervisorPolicy()
    bias: BiasConfig = BiasConfig()
    regime: RegimeConfig = RegimeConfig()
    strategy: StrategyConfig = StrategyConfig()
    selector: SelectorConfig = SelectorConfig()
    sizing: SizingConfig = SizingConfig()
    reward: RewardConfig = RewardConfig()
    promotion: PromotionRule = PromotionRule()
    drift: DriftConfig = DriftConfig()
    trainer: TrainerConfig = TrainerConfig()
    paper: PaperConfig = PaperConfig()
    live: LiveConfig = LiveConfig()
    binance: BinanceConfig = BinanceConfig()
    model_versions: dict[str, str] = Field(
        default_factory=dict,
        description="JSON map model -> registry version scored instead of the promoted one "
        "(`quantum-trader incident replay --model-version`); empty = the promoted set",
    )
    ensemble_weights: dict[str, float] = Field(
        default_factory=lambda: {"xgboost": 0.25, "lightgbm": 0.25, "nhits": 0.25, "patchtst": 0.25}
    )

    @field_validator("mode", mode="before")
    @classmethod
    def _refuse_mainnet(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in ("mainnet", "live", "prod"):
            raise ValueError(
                f"QT_MODE={value} is refused: real-money trading is not offered; "
                "use QT_MODE=paper (default) or QT_MODE=testnet"
            )
        return value

    @model_validator(mode="after")
    def _testnet_needs_keys(self) -> Settings:
        if self.mode == "testnet" and not (self.binance_api_key and self.binance_api_secret):
            raise ValueError("mode=testnet needs QT_BINANCE_API_KEY and QT_BINANCE_API_SECRET")
        return self


# The Qt GUI toolkit also reads QT_* variables (desktop sessions set some); they are not ours.
_QT_TOOLKIT_PREFIXES = (
    "QT_QPA_",
    "QT_SCALE",
    "QT_AUTO_SCREEN",
    "QT_IM_",
    "QT_ACCESSIBILITY",
    "QT_FONT_DPI",
    "QT_SCREEN_",
    "QT_PLUGIN_PATH",
    "QT_LOGGING_RULES",
    "QT_DEBUG_",
    "QT_ENABLE_HIGHDPI",
    "QT_WAYLAND_",
)


def unknown_env_keys(environ: dict[str, str] | None = None) -> list[str]:
    """``QT_*`` variables that name no setting (pydantic-settings ignores those silently)."""
    env = os.environ if environ is None else environ
    known = {f"QT_{name.upper()}" for name in Settings.model_fields}
    return sorted(
        key
        for key in env
        if key.startswith("QT_")
        and key.split("__", 1)[0] not in known
        and not key.startswith(_QT_TOOLKIT_PREFIXES)
    )


def run_configuration(settings: Settings) -> dict[str, object]:
    """Everything a run's trades depend on, JSON-safe, for its report (no secrets, no paths)."""
    skip = {"binance_api_key", "binance_api_secret", "journal_dsn", "kafka_bootstrap",
            "schema_registry_url", "data_dir", "registry_dir", "runs_dir", "trace_file",
            "web_host", "web_port", "dashboard_host", "dashboard_port",
            "jaeger_ui_url", "live", "trainer"}  # fmt: skip
    data = settings.model_dump(mode="json", exclude=skip)
    for endpoint in ("rest_url", "user_stream_url"):
        data["binance"].pop(endpoint, None)
    return data


def settings_env(settings: Settings) -> dict[str, str]:
    """``settings`` as ``QT_*`` environment variables, for a worker subprocess to read back."""
    import json

    def text(value: object) -> str:
        if isinstance(value, SecretStr):
            return value.get_secret_value()
        if isinstance(value, str | int | float | bool | Path):
            return str(value)
        if isinstance(value, BaseModel):  # nested twice (live.universe): JSON, as pydantic reads it
            return json.dumps(value.model_dump(mode="json"))
        return json.dumps(value, default=str)

    env: dict[str, str] = {}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, BaseModel):
            for sub in type(value).model_fields:
                env[f"QT_{name.upper()}__{sub.upper()}"] = text(getattr(value, sub))
        else:
            env[f"QT_{name.upper()}"] = text(value)
    return env


def with_overrides(settings: Settings, assignments: Iterable[str]) -> Settings:
    """``settings`` with ``section.field=value`` (or ``field=value``) assignments applied,
    validated like the environment's ``QT_SECTION__FIELD`` (a JSON value for maps and lists);
    ``ValueError`` names an unknown setting or a bad value."""
    import json

    data = settings.model_dump()
    for assignment in assignments:
        name, sep, text = assignment.partition("=")
        path = [p.strip().lower() for p in name.split(".") if p.strip()]
        if not sep or not path or len(path) > 2:
            raise ValueError(f"{assignment!r}: expected section.field=value or field=value")
        holder = data
        if len(path) == 2:
            if not isinstance(data.get(path[0]), dict) or path[0] not in Settings.model_fields:
                raise ValueError(f"{assignment!r}: {path[0]!r} is no settings section")
            holder = data[path[0]]
        if path[-1] not in holder:
            raise ValueError(f"{assignment!r}: no setting {'.'.join(path)!r}")
        value: object = text
        if isinstance(holder[path[-1]], dict | list | tuple):
            try:
                value = json.loads(text)
            except ValueError as exc:
                raise ValueError(f"{assignment!r}: not JSON ({exc})") from None
        holder[path[-1]] = value
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ValueError(str(exc)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; raises on unknown ``QT_`` keys."""
    unknown = unknown_env_keys()
    if unknown:
        raise ValueError(f"unknown settings in the environment: {', '.join(unknown)}")
    return Settings()
