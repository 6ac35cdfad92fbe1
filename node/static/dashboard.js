// The owner's dashboard (docs/dashboard.md). Plain JS, no library: it polls this node's own API
// (relative URLs only), and draws gauges and charts as inline SVG.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const KINDS = ["ACT", "DAT", "CPT", "TRT"];
const SEVERITY = { healthy: 0, normal: 1, warning: 2, critical: 3 };
const KIND_COLOURS = { ACT: "#4e79a7", DAT: "#f28e2b", CPT: "#59a14f", TRT: "#b07aa1" };
const PALETTE = ["#4e79a7", "#e15759", "#59a14f", "#f28e2b", "#76b7b2", "#edc948", "#b07aa1", "#9c755f"];
const TOP_AGENTS_CHARTED = 5;
const TEAMS_CHARTED = 8;
const AGENT_GROUPS_SHOWN = 12;  // agents whose gauges are drawn, the most strained first
const REQUEST_TIMEOUT_MS = 8000;

const params = new URLSearchParams(location.search);
const state = {
  team: params.get("team") || "",
  period: ["day", "week", "month"].includes(params.get("period")) ? params.get("period") : "day",
  refreshMs: Math.max(1, Number(params.get("refresh")) || 5) * 1000,
  updatedMs: null,
  failingSinceMs: null,
  refreshes: 0,
  generation: 0,
  timer: null,
};

// ---- small helpers ------------------------------------------------------------------------------

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined) continue;
    if (k === "text") node.textContent = v;
    else if (k === "class") node.setAttribute("class", v);
    else if (k.startsWith("data")) node.setAttribute(k.replace(/[A-Z]/g, (c) => "-" + c.toLowerCase()), String(v));
    else node.setAttribute(k, String(v));
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function fill(id, ...children) {
  $(id).replaceChildren(...children);
}

const int = (n) => (n === null || n === undefined ? "—" : Number(n).toLocaleString("en-US"));
const tokens = (mT) => (Number(mT) / 1000).toLocaleString("en-US", { minimumFractionDigits: 3, maximumFractionDigits: 3 });
const short = (hex) => (hex && hex.length > 16 ? `${hex.slice(0, 8)}…${hex.slice(-4)}` : hex || "—");

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = Number(n), i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${i ? v.toFixed(1) : v} ${units[i]}`;
}

// A budget amount in the unit of its metric (docs/api.md "Metrics").
function amount(metric, n) {
  if (n === null || n === undefined) return "∞";
  if (metric === "act.cost") return `${tokens(n)} T`;  // milli-T, the one cost the report tiles show too
  if (metric.startsWith("dat.")) return bytes(n);
  return int(n);
}

function when(ms) {
  if (!ms) return "—";
  return new Date(ms).toISOString().replace("T", " ").slice(0, 16) + " UTC";
}

function ago(ms, now) {
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 120) return `${s} s ago`;
  if (s < 7200) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
}

function until(ms, now) {
  const s = Math.max(0, Math.round((ms - now) / 1000));
  if (s < 120) return `in ${s} s`;
  if (s < 7200) return `in ${Math.round(s / 60)} min`;
  if (s < 172800) return `in ${Math.round(s / 3600)} h`;
  return `in ${Math.round(s / 86400)} days`;
}

class Unreachable extends Error {}
class Denied extends Error {}

// GET a path of this node: JSON (or text), null for a 404, Denied for 401/403, Unreachable otherwise.
async function api(path, { text = false } = {}) {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), REQUEST_TIMEOUT_MS);
  let resp;
  try {
    resp = await fetch(path, { signal: abort.signal, headers: { Accept: text ? "text/plain" : "application/json" } });
  } catch (e) {
    throw new Unreachable(String(e));
  } finally {
    clearTimeout(timer);
  }
  if (resp.status === 404) return null;
  if (resp.status === 401 || resp.status === 403) {
    const doc = await resp.json().catch(() => ({}));
    throw new Denied(doc.error ? doc.error.message : `HTTP ${resp.status}`);
  }
  if (!resp.ok) throw new Error(`${path}: HTTP ${resp.status}`);
  return text ? resp.text() : resp.json();
}

// ---- gauges -------------------------------------------------------------------------------------

function gauge(b, now) {
  const limit = b.allocated;
  const used = b.consumed + (b.held || 0);
  // the bar's scale reaches past the hard mark when the reserve is in use
  const scale = Math.max(limit, b.hard + (b.reserve || 0), used, 1);
  const W = 260, H = 18;
  const x = (v) => Math.min(W, (v / scale) * W);
  const svg = el("svg:svg", { viewBox: `0 0 ${W} ${H + 8}`, class: "bar", role: "img",
    "aria-label": `${b.metric}: ${used} of ${limit}` });
  svg.append(el("svg:rect", { x: 0, y: 4, width: W, height: H, rx: 3, class: "track" }));
  svg.append(el("svg:rect", { x: 0, y: 4, width: x(b.consumed), height: H, rx: 3, class: `fill ${b.status}` }));
  if (b.held) svg.append(el("svg:rect", { x: x(b.consumed), y: 4, width: x(used) - x(b.consumed), height: H, class: "held" }));
  for (const [mark, cls] of [[b.soft, "soft"], [b.hard, "hard"]]) {
    if (mark === undefined || mark === null) continue;
    svg.append(el("svg:line", { x1: x(mark), x2: x(mark), y1: 0, y2: H + 8, class: `mark ${cls}`, dataMark: cls }));
  }
  return el("div", {
      class: `gauge ${b.status}`, dataTestid: "gauge", dataScope: b.scope, dataScopeId: b.scope_id,
      dataMetric: b.metric, dataWindow: b.window, dataConsumed: b.consumed, dataAllocated: limit,
      dataStatus: b.status, dataWindowEnd: b.window_end,
    },
    el("div", { class: "gauge-head" },
      el("span", { class: "metric", text: `${b.metric} per ${b.window}` }),
      el("span", { class: `badge ${b.status}`, dataTestid: "gauge-status", text: b.status })),
    svg,
    el("div", { class: "numbers" },
      el("b", { dataTestid: "gauge-consumed", text: amount(b.metric, b.consumed) }), " of ",
      el("span", { dataTestid: "gauge-allocated", text: amount(b.metric, limit) }),
      b.held ? el("span", { class: "muted", text: ` (+${amount(b.metric, b.held)} held)` }) : null),
    el("div", { class: "muted", dataTestid: "gauge-window-end",
      text: `window ends ${until(b.window_end, now)} (${when(b.window_end)})` }));
}

function renderBudgets(doc) {
  const limited = doc.budgets.filter((b) => b.allocated !== null);
  // one heading per scope, its gauges under it: team, platform and user scopes first (as the node
  // sorts them), then the agents, the most strained first so that trouble is at the top
  const groups = new Map();
  for (const b of limited) {
    const key = `${b.scope} ${b.scope_id}`;
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(b);
  }
  // a suspended agent is the most strained of all, whatever its gauges say (it spends nothing now)
  const suspended = new Set((doc.suspensions || []).map((x) => x.agent));
  const worst = (bs) => (bs[0].scope === "agent" && suspended.has(bs[0].scope_id) ? 99
    : Math.max(...bs.map((b) => SEVERITY[b.status] || 0)));
  const ordered = Array.from(groups.values()).map((bs, i) => [bs, i])
    .sort(([x, i], [y, j]) => (x[0].scope === "agent" && y[0].scope === "agent" ? worst(y) - worst(x) || i - j : i - j))
    .map(([bs]) => bs);
  const parts = [];
  let agentsShown = 0;
  for (const bs of ordered) {
    const b = bs[0];
    if (b.scope === "agent" && ++agentsShown > AGENT_GROUPS_SHOWN) continue;
    const name = b.scope === "agent" || b.scope === "user" ? short(b.scope_id) : b.scope_id;
    parts.push(el("h3", { class: "scope", dataTestid: "gauge-scope", title: b.scope_id }, `${b.scope} `, el("code", { text: name })));
    parts.push(...bs.map((x) => gauge(x, doc.now)));
  }
  if (agentsShown > AGENT_GROUPS_SHOWN) {
    parts.push(el("p", { class: "empty", dataTestid: "gauges-more", text: `${agentsShown - AGENT_GROUPS_SHOWN} more agents` +
      ` (none more strained than those shown) are not drawn${state.team ? "" : "; pick a team to see its agents"}.` }));
  }
  fill("gauges", ...parts);
  $("gauges").dataset.team = doc.team || "";
  const empty = $("gauges-empty");
  empty.hidden = limited.length > 0;
  if (!doc.agents.length) {
    empty.textContent = state.team
      ? `Team ${state.team} has no agents on this node. An authority registers agents with an agent.register record naming the team.`
      : "No agents yet. Agents appear once they submit events (ats submit act --key agent.key …) or an authority registers them.";
  } else {
    empty.textContent = `No limited budgets: the ${doc.budgets.length} budget rules of these agents have no limit (plans set limits).`;
  }
  renderAlerts(doc);
}

// ---- charts -------------------------------------------------------------------------------------

function niceMax(v) {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 5, 10].map((m) => m * p).find((m) => m >= v);
}

function tickLabel(ms) {
  const iso = new Date(ms).toISOString();
  return state.period === "day" ? iso.slice(11, 16) : iso.slice(5, 10);
}

// series: [{name, colour, values: [number per bucket]}]; stacked bars or lines over the buckets.
function chart(id, starts, series, { stacked = false, format = int } = {}) {
  const W = 560, H = 200, L = 56, B = 22, T = 8;
  const n = starts.length;
  const plotW = W - L - 8, plotH = H - B - T;
  const totals = starts.map((_, i) => series.reduce((s, ser) => s + (stacked ? ser.values[i] : 0), 0));
  const peak = stacked ? Math.max(0, ...totals) : Math.max(0, ...series.flatMap((s) => s.values));
  const top = niceMax(peak);
  const y = (v) => T + plotH - (v / top) * plotH;
  const step = n ? plotW / n : plotW;
  const svg = el("svg:svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img" });
  for (const f of [0, 0.5, 1]) {
    svg.append(el("svg:line", { x1: L, x2: W - 8, y1: y(top * f), y2: y(top * f), class: "grid" }));
    svg.append(el("svg:text", { x: L - 6, y: y(top * f) + 4, class: "axis", "text-anchor": "end", text: format(top * f) }));
  }
  const every = Math.max(1, Math.ceil(n / 8));
  starts.forEach((ms, i) => {
    if (i % every === 0) svg.append(el("svg:text", { x: L + step * i + step / 2, y: H - 6, class: "axis", "text-anchor": "middle", text: tickLabel(ms) }));
  });
  if (stacked) {
    const base = starts.map(() => 0);
    for (const s of series) {
      s.values.forEach((v, i) => {
        if (!v) return;
        svg.append(el("svg:rect", { x: L + step * i + step * 0.1, width: step * 0.8, y: y(base[i] + v), height: y(base[i]) - y(base[i] + v), fill: s.colour },
          el("svg:title", { text: `${s.name} ${tickLabel(starts[i])}: ${format(v)}` })));
        base[i] += v;
      });
    }
  } else {
    for (const s of series) {
      const pts = s.values.map((v, i) => `${(L + step * i + step / 2).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
      svg.append(el("svg:polyline", { points: pts, fill: "none", stroke: s.colour, "stroke-width": 2 }, el("svg:title", { text: s.name })));
    }
  }
  const legend = el("ul", { class: "legend" }, ...series.map((s) => {
    const total = s.values.reduce((a, v) => a + v, 0);
    const swatch = el("span", { class: "swatch" });
    swatch.style.background = s.colour;
    return el("li", { dataTestid: "series", dataName: s.name, dataTotal: total }, swatch, `${s.label || s.name} `,
      el("b", { dataTestid: "series-total", text: format(total) }));
  }));
  const box = $(id);
  if (!n || !series.length) {
    box.replaceChildren(el("p", { class: "empty", dataTestid: "chart-empty", text: "No usage in this period yet." }));
    return;
  }
  box.replaceChildren(svg, legend);
}

// Per-bucket values of a report's series, aligned on the buckets of `starts`.
function aligned(report, starts, key) {
  const by = new Map((report && report.series ? report.series.points : []).map((p) => [p.start_ms, p[key] || 0]));
  return starts.map((s) => by.get(s) || 0);
}

function renderReport(report, agentReports, teamReports) {
  const empty = $("reports-empty");
  if (!report) {
    empty.hidden = false;
    empty.textContent = "Usage reports are not available from this node (GET /v1/reports/… answered 404).";
    fill("totals");
    for (const id of ["chart-kind", "chart-agent", "chart-team"]) fill(id, el("p", { class: "empty", text: "No report." }));
    fill("top-agents"); fill("top-ops");
    return;
  }
  empty.hidden = true;
  $("period-label").textContent = `${report.period.kind}: ${when(report.period.start_ms)} → ${when(report.period.end_ms)}`;
  const t = report.totals || {};
  const tile = (label, testid, value, sub) => el("div", { class: "tile", dataTestid: testid, dataValue: value },
    el("div", { class: "muted", text: label }), el("div", { class: "big", dataTestid: "tile-value", text: sub }));
  fill("totals",
    tile("cost", "total-cost", report.cost_mT, `${tokens(report.cost_mT)} T`),
    ...KINDS.map((k) => tile(`${k} events`, `total-${k}`, (t[k] || {}).events || 0, int((t[k] || {}).events || 0))));
  const starts = report.series ? report.series.points.map((p) => p.start_ms) : [];
  chart("chart-kind", starts, KINDS.map((k) => ({ name: k, colour: KIND_COLOURS[k], values: aligned(report, starts, k) })), { stacked: true });
  chart("chart-agent", starts, agentReports.map(([agent, r], i) => (
    { name: agent, label: short(agent), colour: PALETTE[i % PALETTE.length], values: aligned(r, starts, "cost_mT") })), { format: tokens });
  chart("chart-team", starts, teamReports.map(([team, r], i) => (
    { name: team, colour: PALETTE[i % PALETTE.length], values: aligned(r, starts, "cost_mT") })), { format: tokens });
  const row = (name, testid, key, r) => el("tr", { dataTestid: testid, dataKey: key, dataCost: r.cost_mT, dataEvents: r.events },
    el("td", {}, name), el("td", { text: int(r.events) }), el("td", { dataTestid: "cost", text: tokens(r.cost_mT) }));
  const agents = (report.by_agent || []).slice(0, 10);
  const agentName = (a) => el("span", {}, el("code", { title: a.agent, text: short(a.agent) }),
    a.suspended ? el("b", { class: "critical", dataTestid: "top-agent-suspended", text: " suspended" }) : null);
  fill("top-agents", ...(agents.length ? agents.map((a) => row(agentName(a), "top-agent", a.agent, a))
    : [el("tr", {}, el("td", { colspan: 3, class: "empty", text: "No agent spent anything in this period." }))]));
  const ops = (report.by_operation || []).slice(0, 10);
  fill("top-ops", ...(ops.length ? ops.map((o) => row(o.op, "top-op", o.op, o))
    : [el("tr", {}, el("td", { colspan: 3, class: "empty", text: "No operations in this period." }))]));
  state.anomalies = report.anomalies || [];
}

// ---- alerts, suspensions ------------------------------------------------------------------------

function renderAlerts(doc) {
  fill("suspensions", ...doc.suspensions.map((s) => el("li", { class: "critical", dataTestid: "suspension", dataAgent: s.agent },
    el("b", { text: "suspended " }), el("code", { title: s.agent, text: short(s.agent) }),
    ` since ${when(s.since)}, ${s.until ? "until " + when(s.until) : "until an authority lifts it"}: ${s.reason} (${s.metric})`)));
  const rows = doc.alerts.map((a) => el("tr", { dataTestid: "alert", dataType: a.type, dataId: a.id },
    el("td", { text: when(a.ts) }), el("td", {}, el("span", { class: `badge ${a.type === "soft_limit" ? "warning" : "critical"}`, text: a.type })),
    el("td", { text: `${a.scope} ${a.scope === "agent" || a.scope === "user" ? short(a.scope_id) : a.scope_id}` }),
    el("td", { text: a.metric }), el("td", { class: "muted", text: JSON.stringify(a.detail) })));
  // anomalies of the report (docs/reports.md): usage far from the agent's own recent pattern
  const anomalies = (state.anomalies || []).map((a) => el("tr", { dataTestid: "anomaly", dataAgent: a.agent },
    el("td", { text: when(a.ts) }), el("td", {}, el("span", { class: "badge warning", text: "anomaly" })),
    el("td", { text: `agent ${short(a.agent)}` }), el("td", { text: a.metric }),
    el("td", { class: "muted", text: `${int(a.value)} where about ${int(a.expected)} was expected (score ${a.score})` })));
  fill("alerts", ...anomalies, ...rows);
  const empty = $("alerts-empty");
  empty.hidden = rows.length + anomalies.length + doc.suspensions.length > 0;
  empty.textContent = "No alerts: no budget in this view crossed a soft or hard limit, and no agent is suspended.";
}

// ---- replication --------------------------------------------------------------------------------

function renderCheckpoint(note, anchored, info) {
  const lines = (note || "").split("\n");
  $("cp-size").textContent = lines[1] || "—";
  $("cp-root").textContent = lines[2] || "—";
  const sigs = lines.filter((l) => l.startsWith("— ")).map((l) => l.slice(2).split(" ")[0]);
  fill("cp-signatures", ...sigs.map((name) => {
    const own = name === info.origin_line;
    return el("li", { dataTestid: own ? "cp-signer" : "cp-witness", dataName: name },
      own ? "signed by this node " : "cosigned by witness ", el("code", { title: name, text: short(name.split("/").pop()) }));
  }));
  if (sigs.length <= 1) $("cp-signatures").append(el("li", { class: "muted", dataTestid: "cp-no-witness",
    text: "No witness has cosigned this checkpoint yet (peers cosign after they verify it)." }));
  const anchoredSize = anchored ? anchored.split("\n")[1] : null;
  $("cp-anchored").textContent = anchoredSize ? `yes, at size ${anchoredSize}` : "not yet: no checkpoint has witness_quorum cosignatures";
  $("cp-anchored").dataset.size = anchoredSize || "";
}

function renderPeers(doc, now) {
  const peers = doc.peers || [];
  fill("peers", ...peers.map((p) => el("tr", { dataTestid: "peer", dataUrl: p.url, dataState: p.state },
    el("td", {}, p.url, el("br"), el("code", { class: "muted", text: short(p.node) })),
    el("td", {}, el("span", { class: `badge ${p.state === "ok" ? "healthy" : p.state === "failing" ? "warning" : "critical"}`, text: p.state })),
    el("td", { dataTestid: "behind-events", text: int(p.behind_events) }),
    el("td", { text: `${int(p.peer_behind_events)} / ${bytes(p.peer_behind_bytes)}` }),
    el("td", { title: p.last_error || "", text: p.last_contact_ms ? ago(p.last_contact_ms, now) : "never" }))));
  const empty = $("peers-empty");
  empty.hidden = peers.length > 0;
  empty.textContent = "No peers. Name static peers with the peers setting (ATS_PEERS), or let discovery find nodes; see docs/replication.md.";
  fill("origins", ...(doc.origins || []).map((o) => el("tr", { dataTestid: "origin", dataOrigin: o.origin },
    el("td", {}, el("code", { title: o.origin, text: short(o.origin) })), el("td", { text: int(o.held) }), el("td", { text: int(o.seen) }))));
}

// ---- exports (docs/fleets.md) ----------------------------------------------------------------------

function renderExports(doc) {
  const exporters = (doc && doc.exporters) || [];
  $("exports-section").hidden = exporters.length === 0;
  fill("exports", ...exporters.map((e) => {
    const state = !e.up ? "down" : e.alerting ? "behind" : "ok";
    return el("tr", { dataTestid: "exporter", dataSink: e.sink, dataState: state, dataBacklog: e.backlog_events },
      el("td", { text: e.sink === "postgres" ? "PostgreSQL" : "NATS JetStream" }),
      el("td", { title: e.last_error || "" }, el("span", { class: `badge ${state === "ok" ? "healthy" : "critical"}`, text: state })),
      el("td", { dataTestid: "export-backlog", text: int(e.backlog_events) }),
      el("td", { text: e.backlog_age_ms ? `${(e.backlog_age_ms / 1000).toFixed(1)} s` : "—" }),
      el("td", { text: int(e.exported_events) }), el("td", { text: String(e.rate_events_per_s) }),
      el("td", { title: e.last_error || "", text: int(e.errors) }));
  }));
}

// ---- the refresh cycle --------------------------------------------------------------------------

function teamOptions(doc) {
  const select = $("team");
  const teams = doc.teams.map((t) => t.team);
  if (state.team && !teams.includes(state.team)) teams.push(state.team);
  const wanted = ["", ...teams].join("\n");
  const have = Array.from(select.options).map((o) => o.value).join("\n");
  if (wanted !== have) {
    select.replaceChildren(el("option", { value: "", text: "All teams (whole node)" }),
      ...teams.map((t) => el("option", { value: t, text: t })));
  }
  select.value = state.team;
}

async function reportsFor(scopes) {
  return Promise.all(scopes.map(async ([scope, id]) => {
    const r = await api(`/v1/reports/${scope}/${encodeURIComponent(id)}?period=${state.period}`);
    return [id, r];
  }));
}

// Fetch everything, then draw it unless a newer refresh started meanwhile; true if drawn.
async function refresh(generation) {
  const q = state.team ? `?team=${encodeURIComponent(state.team)}` : "";
  const scope = state.team ? `team/${encodeURIComponent(state.team)}` : "node/all";
  const [info, agents, budgets, report, peers, note, anchored, exportsDoc] = await Promise.all([
    api("/v1/node"), api(`/v1/dashboard/agents${q}`), api(`/v1/dashboard/budgets${q}`),
    api(`/v1/reports/${scope}?period=${state.period}`), api("/v1/peers"),
    api("/v1/log/checkpoint", { text: true }), api("/v1/log/checkpoint/anchored", { text: true }),
    api("/v1/dashboard/exports"),
  ]);
  const top = report ? (report.by_agent || []).filter((a) => /^[0-9a-f]{64}$/.test(a.agent || ""))
    .slice(0, TOP_AGENTS_CHARTED).map((a) => ["agent", a.agent]) : [];
  const teams = agents.teams.slice(0, TEAMS_CHARTED).map((t) => ["team", t.team]);
  const [agentReports, teamReports] = report ? await Promise.all([reportsFor(top), reportsFor(teams)]) : [[], []];
  if (generation !== state.generation) return false;  // a newer refresh (another team, period) started
  const now = Date.now();
  $("node-key").textContent = short(info.public_key);
  $("node-key").title = info.public_key;
  $("node-size").textContent = int(info.size);
  $("node-version").textContent = `v${info.version}`;
  $("node-readonly").hidden = !info.read_only;
  teamOptions(agents);
  renderReport(report, agentReports, teamReports);
  renderBudgets(budgets);
  renderPeers(peers, now);
  renderCheckpoint(note, anchored, info);
  renderExports(exportsDoc);
  return true;
}

function showStatus() {
  const now = Date.now();
  $("updated").textContent = state.updatedMs ? `updated ${ago(state.updatedMs, now)}` : "not yet updated";
  const offline = $("offline");
  if (state.failingSinceMs) {
    offline.hidden = false;
    offline.textContent = `Cannot reach this node since ${ago(state.failingSinceMs, now)}` +
      (state.updatedMs ? `; the figures below are from ${ago(state.updatedMs, now)}.` : ".") +
      ` Retrying every ${state.refreshMs / 1000} s.`;
  } else {
    offline.hidden = true;
  }
}

async function cycle() {
  clearTimeout(state.timer);
  const generation = ++state.generation;
  try {
    if (!(await refresh(generation))) return;
    state.updatedMs = Date.now();
    state.failingSinceMs = null;
    $("denied").hidden = true;
    document.body.dataset.state = "ok";
  } catch (e) {
    if (e instanceof Denied) {
      $("denied").hidden = false;
      $("denied").textContent = `The node refused the dashboard: ${e.message}`;
      document.body.dataset.state = "denied";
    } else {
      state.failingSinceMs = state.failingSinceMs || Date.now();
      document.body.dataset.state = e instanceof Unreachable ? "offline" : "error";
      if (!(e instanceof Unreachable)) console.error(e);
    }
    if (generation !== state.generation) return;
  }
  state.refreshes += 1;
  document.body.dataset.refreshes = String(state.refreshes);
  showStatus();
  state.timer = setTimeout(cycle, state.refreshMs);
}

function select(key, value) {
  state[key] = value;
  const p = new URLSearchParams(location.search);
  if (value) p.set(key, value); else p.delete(key);
  history.replaceState(null, "", `${location.pathname}${p.toString() ? "?" + p : ""}`);
  cycle();
}

document.addEventListener("DOMContentLoaded", () => {
  $("period").value = state.period;
  $("refresh-s").textContent = String(state.refreshMs / 1000);
  $("team").addEventListener("change", (e) => select("team", e.target.value));
  $("period").addEventListener("change", (e) => select("period", e.target.value));
  setInterval(showStatus, 1000);
  cycle();
});
