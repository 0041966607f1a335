// Quantum Trader dashboard: one page, six views, fed by /api/stream (server-sent events).
// Plain JS, no build step; every value from the topics is set as text, never as HTML.
"use strict";

const MAX_ROWS = 3000; // signal rows kept in the page (the server keeps its own bound)
const SHOWN_ROWS = 200;
const state = { info: {}, snap: null, rows: new Map(), registry: null, pipelinePrev: null };
let equityPlot = null;

// ---------------------------------------------------------------- helpers
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined) continue;
    if (k === "class") e.className = v;
    else if (k === "style") e.style.cssText = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}
const $ = (id) => document.getElementById(id);
const money = (x) => (x === null || x === undefined ? "-" : Number(x).toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 }));
const pct = (x) => (x === null || x === undefined ? "-" : (100 * x).toFixed(2) + "%");
const num = (x, d = 4) => (x === null || x === undefined ? "-" : Number(x).toPrecision(d));
// streams.ordering.END_OF_STREAM: the progress of a finished replay, past any calendar time
const END_OF_STREAM = 2 ** 62;
const time = (ms) => {
  if (ms === null || ms === undefined) return "-";
  if (ms >= END_OF_STREAM) return "end of stream";
  const d = new Date(ms);
  return Number.isNaN(d.getTime()) ? String(ms) : d.toISOString().replace("T", " ").slice(0, 19);
};
const signed = (x) => el("span", { class: x > 0 ? "pos" : x < 0 ? "neg" : "" }, money(x));
function fillBody(table, rows) {
  const body = table.tBodies[0] || table.createTBody();
  body.replaceChildren(...rows);
}
function traceLink(decisionId) {
  if (!decisionId) return "-";
  const run = state.info.source === "run" ? "?run=" + encodeURIComponent(state.info.run_id) : "";
  return el("a", { href: "#trace/" + encodeURIComponent(decisionId) + run, class: "trace-link" }, "trace");
}

// A fetch that never throws: a server that stopped (the demo ended) shows as an error value.
async function getJSON(url, options) {
  try {
    const r = await fetch(url, options);
    const body = await r.json();
    return r.ok ? body : { error: body.error || `${url} answered ${r.status}`, status: r.status };
  } catch (e) {
    return { error: `the dashboard server does not answer (${e.message})` };
  }
}

// ---------------------------------------------------------------- data flow
function applySnapshot(snap) {
  state.snap = snap;
  state.rows = new Map((snap.signals || []).map((r) => [r.signal_id, r]));
  render();
}
function applyUpdate(u) {
  if (!state.snap) state.snap = {};
  Object.assign(state.snap, { overview: u.overview, models: u.models, learning: u.learning, version: u.version });
  for (const r of u.rows || []) state.rows.set(r.signal_id, r);
  if (state.rows.size > MAX_ROWS) {
    const sorted = [...state.rows.values()].sort((a, b) => a.event_time_ms - b.event_time_ms);
    // keep decisions longer than HOLDs: drop the oldest undecided rows first
    for (const r of sorted) {
      if (state.rows.size <= MAX_ROWS) break;
      if (!r.decision_id) state.rows.delete(r.signal_id);
    }
  }
  if (u.info) setInfo(u.info);
  render();
}
function setInfo(info) {
  state.info = Object.assign(state.info, info);
  const i = state.info;
  let text;
  if (i.source === "topics") {
    const f = i.feed || {};
    text = `live: ${i.bootstrap} prefix '${i.prefix}' · ${f.records ?? 0} records read` + (f.error ? ` · ${f.error}` : "");
  } else if (i.source === "run") {
    text = `finished run ${i.run_id}` + (i.partial ? ` · ${i.partial}` : "");
  } else text = "connecting…";
  $("source").textContent = text;
  $("source").dataset.source = i.source || "";
  const controllable = !!i.can_control;
  for (const id of ["btn-halt", "btn-resume"]) {
    $(id).disabled = !controllable;
    $(id).title = controllable ? "" : i.control_refused || "";
  }
}
function connect() {
  const es = new EventSource("/api/stream");
  es.addEventListener("snapshot", (e) => applySnapshot(JSON.parse(e.data)));
  es.addEventListener("update", (e) => applyUpdate(JSON.parse(e.data)));
  es.addEventListener("info", (e) => setInfo(JSON.parse(e.data)));
  es.onerror = () => { $("source").textContent = "stream interrupted: reconnecting…"; };
}

// ---------------------------------------------------------------- router
function currentView() {
  const h = location.hash.slice(1) || "overview";
  return h.split("/")[0];
}
function render() {
  const view = currentView();
  document.querySelectorAll(".view").forEach((s) => s.classList.toggle("active", s.id === "view-" + view));
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.view === view));
  const r = { overview: renderOverview, signals: renderSignals, models: renderModels, learning: renderLearning }[view];
  if (r && state.snap) r();
}
window.addEventListener("hashchange", () => {
  const view = currentView();
  if (view === "runs") loadRuns();
  if (view === "trace") loadTrace();
  if (view === "pipeline") loadPipeline();
  if (view === "models") loadRegistry();
  render();
});

// ---------------------------------------------------------------- overview
function renderOverview() {
  const o = state.snap.overview || {};
  const venues = Object.keys(o.venues || {});
  $("ov-mode").textContent = (state.info.mode || "-") + (venues.length ? ` (venue ${venues.join(", ")})` : "");
  const ks = o.kill_switch || {};
  const tm = o.trading_mode || { mode: ks.halted ? "HALTED" : "NORMAL", detail: "", source: "commands" };
  const trading = $("ov-trading");
  trading.textContent = tm.mode === "HALTED" ? "HALTED (kill switch)" : tm.mode;
  trading.className = tm.mode === "NORMAL" ? "pos" : "neg";
  trading.dataset.source = tm.source;
  trading.dataset.pending = tm.pending ? "true" : "false";
  let title = tm.detail || "";
  if (ks.command) title += ` · last command: ${ks.command.command} from ${time(ks.command.event_time_ms)} by ${ks.command.issued_by}: ${ks.command.reason}`;
  trading.title = title;
  const pm = o.policy_mode;
  const policy = $("ov-policy");
  policy.textContent = pm ? pm.mode : "-";
  policy.className = !pm || pm.mode === "NORMAL" ? "pos" : "neg";
  policy.title = pm ? `${pm.symbol} at ${time(pm.event_time_ms)}` + (pm.reasons.length ? `: ${pm.reasons.join("; ")}` : "") : "no approval yet";
  const risk = o.risk && o.risk.portfolio ? o.risk : null;
  $("ov-day").textContent = risk ? `${money(risk.day_start_equity_usd)} (${pct(risk.daily_drawdown)} of ${pct(risk.max_daily_drawdown)})` : "-";
  $("ov-day").title = risk ? `day ${time(risk.day).slice(0, 10)} start equity; drawdown since then, and the limit` : "";
  $("ov-week").textContent = risk ? `${money(risk.week_start_equity_usd)} (${pct(risk.weekly_drawdown)} of ${pct(risk.max_weekly_drawdown)})` : "-";
  $("ov-week").title = risk ? `ISO week from ${time(risk.week_start_ms).slice(0, 10)} start equity; drawdown since then, and the limit` : "";
  const src = $("ov-source");
  src.dataset.source = risk ? "state" : "commands";
  if (risk) {
    const st = risk.stored || {};
    src.textContent = `trading mode, kill switch, equity and day/week marks: the risk stage's stored state (flushed ${time(st.written_ms)}, at event time ${time(risk.progress_ms)}, ${risk.reserved_positions} positions reserving ${money(risk.reserved_margin_usd)} USDT)` + (tm.detail ? ` · ${tm.detail}` : "");
  } else {
    src.textContent = (o.risk && o.risk.error ? o.risk.error + " · " : "") + "no stored state of the risk stage read: trading mode from control.commands, equity from the trades (realised + unrealised)";
  }
  $("ov-equity").textContent = money(o.equity_usd);
  $("ov-equity").title = o.equity_source || "";
  $("ov-realised").replaceChildren(signed(o.realized_pnl_usd));
  $("ov-unrealised").replaceChildren(signed(o.unrealized_pnl_usd));
  $("ov-fees").textContent = money(o.fees_usd);
  $("ov-time").textContent = time(o.last_event_ms);
  drawEquity(o);
  const positions = o.positions || [];
  $("ov-npos").textContent = `(${positions.length})`;
  fillBody($("positions"), positions.map((p) => el("tr", { "data-symbol": p.symbol },
    el("td", {}, p.symbol), el("td", {}, p.side), el("td", {}, num(p.entry_price, 6)),
    el("td", {}, num(p.qty_open, 5)), el("td", {}, p.leverage ? p.leverage.toFixed(1) + "x" : "-"),
    el("td", {}, num(p.mark_price, 6)), el("td", {}, signed(p.live_pnl)),
    el("td", {}, (p.take_profits || []).map((t) => `${num(t.price, 6)} (${Math.round(100 * t.fraction)}%)`).join(", ") || "-"),
    el("td", {}, num(p.current_stop ?? p.stop_loss, 6)),
    el("td", {}, p.trailing_callback ? pct(p.trailing_callback) : "-"),
    el("td", {}, traceLink(p.decision_id)))));
  fillBody($("trades"), (o.recent_trades || []).slice(0, 50).map((t) => el("tr", {},
    el("td", {}, time(t.event_time_ms)), el("td", {}, t.symbol), el("td", {}, t.side),
    el("td", {}, num(t.entry_price, 6)), el("td", {}, num(t.exit_price, 6)), el("td", {}, signed(t.net_pnl)),
    el("td", {}, t.exit_reason), el("td", {}, t.strategy), el("td", {}, traceLink(t.decision_id)))));
  const mc = o.mode_changes || [];
  $("ov-mode-changes").textContent = mc.length ? "" : "(none: the portfolio stayed NORMAL)";
  fillBody($("mode-changes"), mc.slice(0, 50).map((c) => el("tr", { "data-mode": c.mode },
    el("td", {}, time(c.event_time_ms)), el("td", {}, c.previous),
    el("td", { class: c.mode === "NORMAL" ? "pos" : "neg" }, c.mode), el("td", {}, c.reasons.join("; ") || "-"),
    el("td", {}, money(c.equity_usd)), el("td", {}, pct(c.drawdown)), el("td", {}, c.cause))));
  const u = o.universe || { members: [], winding_down: [], changes: [] };
  $("ov-universe").textContent = u.changes.length
    ? `(${u.members.length} members${u.winding_down.length ? `; winding down: ${u.winding_down.join(", ")}` : ""})`
    : "(no universe events: a file replay, or a live run on fixed symbols)";
  fillBody($("universe"), u.changes.slice(0, 50).map((c) => el("tr", { "data-symbol": c.symbol, "data-change": c.change },
    el("td", {}, time(c.event_time_ms)), el("td", {}, c.symbol), el("td", { class: c.change === "JOINED" ? "pos" : "neg" }, c.change),
    el("td", {}, c.verdict || "-"), el("td", {}, c.rank ?? "-"), el("td", {}, money(c.quote_volume)),
    el("td", {}, pct(c.range_ratio)), el("td", {}, c.listed_days === null ? "-" : num(c.listed_days, 4)), el("td", {}, c.reason))));
  fillBody($("commands"), (o.commands || []).map((c) => el("tr", {},
    el("td", {}, c.command), el("td", {}, time(c.event_time_ms)), el("td", {}, time(c.issued_at_ms)),
    el("td", {}, c.issued_by), el("td", {}, c.reason))));
}
function drawEquity(o) {
  const c = o.equity_curve || { t: [], equity: [], drawdown: [] };
  const start = o.starting_equity_usd || 0;
  const first = c.t.length ? c.t[0] : o.last_event_ms || 0;
  const xs = [first / 1000, ...c.t.map((t) => t / 1000)];
  const eq = [start, ...c.equity];
  const dd = [0, ...c.drawdown.map((d) => -100 * d)];
  if (o.last_event_ms && o.last_event_ms / 1000 > xs[xs.length - 1]) {
    xs.push(o.last_event_ms / 1000); eq.push(eq[eq.length - 1]); dd.push(dd[dd.length - 1]);
  }
  const box = $("equity-chart");
  box.dataset.points = String(c.t.length);
  const data = [xs, eq, dd];
  if (equityPlot) { equityPlot.setData(data); return; }
  equityPlot = new uPlot({
    width: Math.max(400, box.clientWidth || 900), height: 260,
    series: [{}, { label: "equity (USDT)", stroke: "#2b6cb0", points: { show: false }, paths: uPlot.paths.stepped({ align: 1 }), scale: "usd" },
      { label: "drawdown (%)", stroke: "#c53030", fill: "rgba(197,48,48,0.15)", points: { show: false }, paths: uPlot.paths.stepped({ align: 1 }), scale: "pct" }],
    cursor: { points: { show: false } },
    axes: [{}, { scale: "usd", label: "USDT" }, { scale: "pct", side: 1, label: "drawdown %", grid: { show: false } }],
  }, data, box);
}

// confirmation, then the same ControlCommand as `quantum-trader halt|resume`
function askControl(command) {
  const at = state.snap && state.snap.overview ? state.snap.overview.last_event_ms : null;
  const when = at ? `event time ${time(at)} (the newest tick read; a replay applies it there)` : "now (no tick read yet)";
  $("confirm-text").textContent = `Send ${command} to control.commands of '${state.info.prefix}'? It applies from ${when}.`;
  $("confirm-reason").value = `dashboard ${command.toLowerCase()}`;
  const dlg = $("confirm");
  dlg.dataset.command = command;
  dlg.dataset.at = at ?? "";
  dlg.showModal();
}
$("confirm").addEventListener("close", async () => {
  const dlg = $("confirm");
  if (dlg.returnValue !== "ok") { $("control-result").textContent = "cancelled"; $("control-result").className = ""; return; }
  const body = { command: dlg.dataset.command, reason: $("confirm-reason").value, at_ms: dlg.dataset.at ? Number(dlg.dataset.at) : null, confirm: true };
  $("control-result").textContent = `sending ${body.command}…`;
  const j = await getJSON("/api/control", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  $("control-result").textContent = j.error ? j.error : `${j.command} sent (${j.command_id})`;
  $("control-result").className = j.error ? "neg" : "pos";
});
$("btn-halt").addEventListener("click", () => askControl("HALT"));
$("btn-resume").addEventListener("click", () => askControl("RESUME"));

// ---------------------------------------------------------------- signals
const OUTCOMES = ["PENDING", "HOLD", "VETOED", "PASSED", "DECIDED", "APPROVED", "REJECTED"];
OUTCOMES.forEach((o) => $("f-outcome").append(el("option", { value: o }, o)));
$("f-symbol").addEventListener("change", render);
$("f-outcome").addEventListener("change", render);
function syncOptions(select, values, keepAll = true) {
  const have = new Set([...select.options].map((o) => o.value));
  for (const v of values) if (!have.has(v)) select.append(el("option", { value: v }, v));
  if (!keepAll && !select.value && values.length) select.value = values[0];
}
function votesCell(r) {
  return el("div", { class: "votes" }, ...(r.votes || []).map((v) => el("div", { title: `${v.model}@${v.version}` },
    el("b", {}, v.model), ` ${v.action} `, el("small", {}, (v.probabilities || []).map((p) => p.toFixed(2)).join(" / ")))));
}
function renderSignals() {
  const rows = [...state.rows.values()];
  syncOptions($("f-symbol"), [...new Set(rows.map((r) => r.symbol))].sort());
  const sym = $("f-symbol").value, out = $("f-outcome").value;
  const shown = rows.filter((r) => (!sym || r.symbol === sym) && (!out || r.outcome === out))
    .sort((a, b) => b.event_time_ms - a.event_time_ms || (a.signal_id < b.signal_id ? 1 : -1));
  $("signals-count").textContent = `${Math.min(shown.length, SHOWN_ROWS)} of ${shown.length} matching (${rows.length} held)`;
  fillBody($("signals"), shown.slice(0, SHOWN_ROWS).map((r) => el("tr", { "data-outcome": r.outcome, "data-symbol": r.symbol },
    el("td", {}, time(r.event_time_ms)), el("td", {}, r.symbol),
    el("td", {}, `${r.action ?? "?"} ${r.confidence !== null && r.confidence !== undefined ? pct(r.confidence) : ""}`),
    el("td", {}, votesCell(r)),
    el("td", {}, r.vetoed === null ? "-" : r.vetoed ? el("span", { class: "neg" }, "veto: " + r.veto_reasons.map((v) => v.rule).join(", ")) : "pass",
      r.vetoed ? el("div", { class: "detail" }, r.veto_reasons.map((v) => v.detail).join("; ")) : null),
    el("td", {}, r.decision_id ? `${r.side} ${r.strategy} ${r.regime} ×${r.size_multiplier} ${money(r.margin_usd)} USDT` : "-"),
    el("td", {}, r.risk_verdict === "REJECTED" ? el("span", { class: "neg", title: r.risk_detail }, "rejected: " + r.risk_rule)
      : r.risk_verdict === "APPROVED" ? el("span", { class: "pos" }, `approved ${money(r.approved_margin_usd)}`) : "-"),
    el("td", { class: "outcome" }, r.outcome), el("td", {}, traceLink(r.decision_id)))));
}

// ---------------------------------------------------------------- models
async function loadRegistry() {
  if (state.registry) return;
  state.registry = await getJSON("/api/registry");
  render();
}
const mean = (xs) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : null);
function renderModels() {
  const m = state.snap.models || {};
  const reg = (state.registry && state.registry.models) || {};
  const names = [...new Set([...Object.keys(reg), ...Object.keys(m.voting_versions || {})])].sort();
  fillBody($("registry"), names.map((n) => {
    const r = reg[n] || {}; const wf = r.walk_forward || [];
    const voting = Object.entries((m.voting_versions || {})[n] || {}).map(([v, c]) => `${v}: ${c}`).join(", ");
    return el("tr", {}, el("td", {}, n), el("td", {}, r.version || "-"), el("td", {}, voting || "-"),
      el("td", {}, wf.map((f) => num(f.balanced_accuracy, 3)).join(" · ") + (wf.length ? ` (mean ${num(mean(wf.map((f) => f.balanced_accuracy)), 3)})` : "-")),
      el("td", {}, wf.map((f) => num(f.macro_f1, 3)).join(" · ") || "-"),
      el("td", {}, num((r.holdout || {}).balanced_accuracy, 3)), el("td", {}, num((r.holdout || {}).log_loss, 4)));
  }));
  const bal = m.balance || {};
  const row = (sym, c, bias) => {
    const b = c.BUY || 0, s = c.SELL || 0;
    return el("tr", { "data-symbol": sym }, el("td", {}, sym), el("td", {}, b), el("td", {}, s), el("td", {}, c.HOLD || 0),
      el("td", {}, b + s ? pct(b / (b + s)) : "-"),
      el("td", {}, bias ? `${pct(bias.symbol_buy_share)} / ${pct(bias.symbol_sell_share)} of ${bias.symbol_window}` : "-"),
      el("td", {}, bias ? `${pct(bias.overall_buy_share)} / ${pct(bias.overall_sell_share)} of ${bias.overall_window}` : "-"));
  };
  fillBody($("balance"), [...Object.keys(bal).map((s) => row(s, bal[s], (m.bias || {})[s])), row("all", m.balance_overall || {}, null)]);
  const shadows = m.shadows || [];
  const p3 = (x) => (x === null || x === undefined ? "-" : (100 * x).toFixed(3) + "%");  // a row's mean is a few bp
  const ci = (x, lo, hi) => `${p3(x)} [${p3(lo)}, ${p3(hi)}]`;
  fillBody($("shadows"), shadows.length ? shadows.map((sh) => {
    const c = sh.scores.candidate, h = sh.scores.champion;
    const swapped = Object.entries(sh.candidate).filter(([n, v]) => sh.champion[n] !== v).map(([n, v]) => `${n}=${v}`).join(", ");
    return el("tr", { "data-shadow": sh.shadow_id, "data-status": sh.status },
      el("td", {}, `${time(sh.first_ms)} .. ${time(sh.last_ms)}`), el("td", {}, swapped || "-"),
      el("td", {}, sh.rows), el("td", {}, `${c.decisions} of ${sh.min_decisions} (BUY ${pct(c.buy_share)})`),
      el("td", {}, ci(c.mean_pnl, c.lower, c.upper)), el("td", {}, ci(h.mean_pnl, h.lower, h.upper)),
      el("td", {}, `[${p3(sh.diff_lower)}, ${p3(sh.diff_upper)}]`),
      el("td", {}, sh.status === "open" ? `open: ${sh.reasons.length ? "would refuse now: " + sh.reasons.join("; ") : "would promote now"}` : `${sh.status}: ${sh.reasons.join("; ")}`));
  }) : [el("tr", {}, el("td", { colspan: 8 }, "no shadow on signals.shadow (the trainer starts one for each retrain's candidates)"))]);
  const events = m.events || [];
  fillBody($("model-events"), events.length ? events.map((e) => el("tr", {}, el("td", {}, time(e.event_time_ms)),
    el("td", {}, e.model), el("td", {}, e.version), el("td", {}, e.kind), el("td", {}, e.detail)))
    : [el("tr", {}, el("td", { colspan: 5 }, "no record on models.events yet (continual learning publishes drift, candidates, shadow scores and promotions there)"))]);
}

// ---------------------------------------------------------------- learning
function heatColor(v, maxAbs) {
  if (v === null || v === undefined || !maxAbs) return "";
  const a = Math.min(1, Math.abs(v) / maxAbs);
  return v >= 0 ? `background: rgba(56,161,105,${0.15 + 0.7 * a})` : `background: rgba(197,48,48,${0.15 + 0.7 * a})`;
}
function renderLearning() {
  const l = state.snap.learning || {};
  const symbols = [...new Set([...Object.keys(l.qtables || {}), ...Object.keys(l.bandits || {})])].sort();
  syncOptions($("l-symbol"), symbols, false);
  const sym = $("l-symbol").value;
  const source = l.source || { kind: "rewards", detail: "rebuilt from learning.rewards" };
  const srcBox = $("l-source");
  srcBox.dataset.kind = source.kind;
  srcBox.textContent = "source: " + source.detail + (source.error ? ` (${source.error})` : "");
  const info = (l.symbols || {})[sym];
  const part = info && source.partitions ? source.partitions[String(info.partition)] : null;
  $("l-state").textContent = info ? `${sym}: regime ${info.regime}, symbol equity ${money(info.equity)} of peak ${money(info.peak_equity)} (drawdown ${pct(info.drawdown)}, bucket d${info.drawdown_bucket}); rewards pending: ${info.pending_sizing} sizing, ${info.pending_strategy} strategy; instance ${info.partition}` + (part ? `, flushed ${time(part.written_ms)} (changelog offset ${part.offset})` : "") : "";
  if (part) $("l-state").dataset.offset = String(part.offset); else delete $("l-state").dataset.offset;
  const q = (l.qtables || {})[sym] || {};
  const mults = l.multipliers || [];
  const states = Object.keys(q).sort();
  let maxAbs = 0;
  for (const s of states) for (const c of Object.values(q[s])) maxAbs = Math.max(maxAbs, Math.abs(c.q));
  const qt = $("qtable");
  qt.dataset.symbol = sym || "";
  const stateLabel = source.kind === "state" ? "state (confidence bucket / regime / drawdown bucket)" : "state (confidence bucket / regime; drawdown buckets folded)";
  qt.replaceChildren(el("thead", {}, el("tr", {}, el("th", {}, stateLabel), ...mults.map((m) => el("th", {}, `×${m}`)))),
    el("tbody", {}, ...(states.length ? states.map((s) => el("tr", { "data-state": s }, el("th", {}, s), ...mults.map((m) => {
      const c = q[s][m];
      return el("td", { style: heatColor(c && c.q, maxAbs), title: c ? `${c.n} updates` : "never updated", "data-mult": m,
        "data-q": c ? String(c.q) : null, "data-n": c ? String(c.n) : null }, c ? `${c.q.toFixed(3)} (${c.n})` : "·");
    }))) : [el("tr", {}, el("td", { colspan: mults.length + 1 }, "no sizing reward yet"))])));
  const arms = (l.bandits || {})[sym] || {};
  const regimes = [...new Set(Object.keys(arms).map((k) => k.split("/")[0]))].sort();
  const strategies = l.strategies || [];
  let maxArm = 0;
  for (const a of Object.values(arms)) maxArm = Math.max(maxArm, Math.abs(a.value));
  $("bandit").replaceChildren(el("thead", {}, el("tr", {}, el("th", {}, "regime"), ...strategies.map((s) => el("th", {}, s)))),
    el("tbody", {}, ...(regimes.length ? regimes.map((r) => el("tr", { "data-regime": r }, el("th", {}, r), ...strategies.map((s) => {
      const a = arms[`${r}/${s}`];
      return el("td", { style: heatColor(a && a.value, maxArm), "data-strategy": s, "data-value": a ? String(a.value) : null,
        "data-count": a ? String(a.count) : null }, a ? `${a.value.toFixed(3)} (${a.count})` : "·");
    }))) : [el("tr", {}, el("td", { colspan: strategies.length + 1 }, "no strategy reward yet"))])));
}
$("l-symbol").addEventListener("change", render);

// ---------------------------------------------------------------- pipeline
let pipelineTimer = null;
async function loadPipeline() {
  clearTimeout(pipelineTimer);
  if (currentView() !== "pipeline") return;
  const p = await getJSON("/api/pipeline");
  renderPipeline(p);
  if (!p.report) pipelineTimer = setTimeout(loadPipeline, 2000);
}
const kB = (b) => (b === null || b === undefined ? "-" : (b / 1024).toFixed(1) + " kB");
// the stage's stored state (its changelog) and its flush time (qt_state_flush_seconds)
function stateCells(p, name) {
  const st = (p.state || {})[name];
  const fl = (p.state_flush || {})[name];
  const stored = !st ? "-" : st.error ? st.error : `${kB(st.size_bytes)} in ${st.instances} instance${st.instances === 1 ? "" : "s"}`;
  let flush = "-";
  if (st && st.last_flush_ms) flush = p.report ? time(st.last_flush_ms) : `${((p.now_ms - st.last_flush_ms) / 1000).toFixed(1)} s ago`;
  if (fl) flush += ` · ${num(fl.p50_us / 1000, 3)} / ${num(fl.p99_us / 1000, 3)} ms (${fl.count} flushes)`;
  return [el("td", { class: "state-size", title: st && st.largest_bytes ? `largest instance ${kB(st.largest_bytes)}` : "" }, stored), el("td", { class: "state-flush" }, flush)];
}
function renderPipeline(p) {
  const status = $("pipeline-status");
  if (p.report) {
    status.textContent = "finished run: latency and throughput as the report measured them; stored state as read at the run's end";
    const lat = p.report.latency || {}, tp = p.report.throughput || {};
    status.append(el("div", {}, `${num(tp.bars_per_s, 3)} bars/s, ${num(tp.events_per_s, 3)} records/s over ${num(tp.elapsed_s, 3)} s`));
    const names = [...new Set([...Object.keys(lat), ...Object.keys(p.state || {})])].sort();
    fillBody($("pipeline"), names.map((s) => el("tr", { "data-stage": s }, el("td", {}, s), el("td", {}, "-"),
      el("td", {}, "-"), el("td", {}, lat[s] ? `${num(lat[s].p50_us, 3)} / ${num(lat[s].p99_us, 3)}` : "-"), el("td", {}, "-"), el("td", {}, "-"), el("td", {}, "-"),
      ...stateCells(p, s))));
    return;
  }
  if (p.error) { status.textContent = p.error; status.className = "neg"; fillBody($("pipeline"), []); return; }
  const h = p.health || {};
  status.className = h.status === "ok" ? "pos" : "neg";
  status.textContent = `worker ${p.worker_url}: ${h.status}` + ((h.reasons || []).length ? " — " + h.reasons.join("; ") : "") +
    ` · models ${Object.entries(h.models || {}).map(([m, v]) => m + "@" + v).join(", ")}`;
  const prev = state.pipelinePrev;
  const lat = p.latency || {};
  fillBody($("pipeline"), Object.entries(h.stages || {}).map(([name, s]) => {
    const count = lat[name] ? lat[name].count : null;
    let rate = "-";
    if (prev && prev.latency && prev.latency[name] && count !== null) rate = num((count - prev.latency[name].count) / (p.fetched_s - prev.fetched_s), 3);
    const health = s.crashed ? "crashed: " + s.crashed : s.stalled ? "stalled" : "ok";
    return el("tr", { "data-stage": name }, el("td", {}, name), el("td", { class: health === "ok" ? "pos" : "neg" }, health),
      el("td", {}, rate), el("td", {}, lat[name] ? `${num(lat[name].p50_us, 3)} / ${num(lat[name].p99_us, 3)}` : "-"),
      el("td", {}, s.pending), el("td", {}, time(s.watermark_ms)), el("td", {}, s.last_progress_s_ago === null ? "never" : `${s.last_progress_s_ago.toFixed(1)} s ago`),
      ...stateCells(p, name));
  }));
  state.pipelinePrev = p;
}

// ---------------------------------------------------------------- runs
async function loadRuns() {
  const runs = await getJSON("/api/runs");
  if (runs.error) { fillBody($("runs"), [el("tr", {}, el("td", { colspan: 9 }, runs.error))]); return; }
  fillBody($("runs"), runs.map((r) => el("tr", { "data-run": r.run_id },
    el("td", {}, el("input", { type: "radio", name: "run-a", value: r.run_id, onchange: compareRuns })),
    el("td", {}, el("input", { type: "radio", name: "run-b", value: r.run_id, onchange: compareRuns })),
    el("td", {}, r.run_id), el("td", {}, r.error || `${(r.symbols || []).join(", ")} ${r.first_bar} .. ${r.last_bar}`),
    el("td", {}, r.closed_trades ?? "-"), el("td", {}, signed(r.net_pnl_usd)), el("td", {}, pct(r.return_pct)),
    el("td", {}, pct(r.max_drawdown_pct)), el("td", { class: "hash" }, r.trades_sha256 || "-"))));
}
function flatten(obj, prefix = "", out = {}) {
  for (const [k, v] of Object.entries(obj || {})) {
    if (v && typeof v === "object" && !Array.isArray(v)) flatten(v, prefix + k + ".", out);
    else out[prefix + k] = JSON.stringify(v);
  }
  return out;
}
async function compareRuns() {
  const a = document.querySelector("input[name=run-a]:checked"), b = document.querySelector("input[name=run-b]:checked");
  const ids = [a, b].filter(Boolean).map((x) => x.value);
  const reports = await Promise.all(ids.map((id) => getJSON("/api/runs/" + encodeURIComponent(id))));
  const box = $("compare");
  box.replaceChildren();
  if (reports.length === 2) {
    const same = reports[0].trades_sha256 === reports[1].trades_sha256;
    box.append(el("p", { id: "hash-verdict", class: same ? "pos" : "neg" }, same ? "same trades: trades_sha256 equal" : "different trades: trades_sha256 differ"));
    const ca = flatten(reports[0].config), cb = flatten(reports[1].config);
    const diff = [...new Set([...Object.keys(ca), ...Object.keys(cb)])].filter((k) => ca[k] !== cb[k]).sort();
    box.append(el("p", {}, diff.length ? "settings that differ:" : "same settings"),
      el("ul", {}, ...diff.map((k) => el("li", {}, `${k}: ${ca[k] ?? "-"} vs ${cb[k] ?? "-"}`))));
  }
  const cols = el("div", { class: "columns" });
  reports.forEach((r, i) => {
    const p = r.performance || {}, c = r.counts || {};
    cols.append(el("div", { class: "column" }, el("h3", {}, ids[i]),
      el("img", { src: `/api/runs/${encodeURIComponent(ids[i])}/equity.png`, alt: "equity of " + ids[i] }),
      el("table", {}, el("tbody", {}, ...[["trades", c.closed_trades], ["net PnL", money(p.net_pnl_usd)], ["fees", money(p.fees_usd)],
        ["return", pct(p.return_pct)], ["max drawdown", pct(p.max_drawdown_pct)], ["win rate", pct(p.win_rate)],
        ["decisions / approved", `${c.decisions} / ${c.approvals}`], ["models", Object.entries(r.model_versions || {}).map(([m, v]) => m + "@" + v).join(", ")],
        ["trades_sha256", r.trades_sha256]].map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", { class: k === "trades_sha256" ? "hash" : "" }, v)))))));
  });
  box.append(cols);
}

// ---------------------------------------------------------------- trace
function spanNode(n) {
  const attrs = Object.entries(n.attributes || {}).filter(([k]) => !/^(messaging\.|qt\.stage|qt\.sample|qt\.input)/.test(k));
  return el("li", { class: n.status === "ERROR" ? "neg" : "" }, el("b", {}, n.name), ` ${n.duration_ms.toFixed(3)} ms `,
    el("small", {}, attrs.map(([k, v]) => `${k}=${typeof v === "number" ? Number(v).toPrecision(6) : v}`).join("  ")),
    n.children.length ? el("ul", {}, ...n.children.map(spanNode)) : null);
}
async function loadTrace() {
  const [, rest] = location.hash.slice(1).split(/\/(.*)/s);
  const [id, query] = (rest || "").split("?");
  const decision = decodeURIComponent(id || "");
  $("trace-title").textContent = `decision ${decision}`;
  $("trace-tree").textContent = "loading…";
  $("trace-links").replaceChildren();
  const t = await getJSON(`/api/trace/${encodeURIComponent(decision)}${query ? "?" + query : ""}`);
  if (t.error) { $("trace-tree").textContent = t.error; return; }
  $("trace-links").append(`trace ${t.trace_ids.join(", ")}: ${t.spans} spans from ${t.file} (the same tree as quantum-trader trace ${decision})`);
  if (t.jaeger_ui_url) for (const tid of t.trace_ids) $("trace-links").append(" ", el("a", { href: `${t.jaeger_ui_url.replace(/\/$/, "")}/trace/${tid}` }, "open in Jaeger"));
  $("trace-tree").replaceChildren(el("ul", { class: "tree" }, ...t.roots.map(spanNode)));
}

// ---------------------------------------------------------------- start
(async function start() {
  setInfo(await getJSON("/api/info"));
  connect();
  window.dispatchEvent(new HashChangeEvent("hashchange"));
})();
