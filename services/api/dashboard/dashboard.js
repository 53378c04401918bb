// The dashboard: polls /v1/live once a second and draws two sparklines in plain SVG;
// the experiments panel polls /v1/experiments every few seconds and shows the running
// experiment (else the latest); the watch box follows one user's list over Server-Sent
// Events.
"use strict";
const history = { eps: [], p99: [] };
const KEEP = 120;
const $ = (id) => document.getElementById(id);
const fmt = (x, digits = 1) => (x === null || x === undefined ? "–" : Number(x).toFixed(digits));

function spark(id, values) {
  const max = Math.max(1e-9, ...values.filter((v) => v !== null));
  const start = KEEP - values.length; // newest at the right edge, history grows leftwards
  const points = values.map((v, i) => `${((start + i) * 120) / (KEEP - 1)},${40 - ((v ?? 0) / max) * 38}`);
  $(id).setAttribute("points", points.join(" "));
}

async function poll() {
  try {
    const live = await (await fetch("/v1/live")).json();
    $("eps").textContent = fmt(live.lists_per_s);
    const lat = live.latency_ms;
    $("p99").textContent = "p99 " + fmt(lat.p99);
    $("pcts").textContent = `p50 ${fmt(lat.p50)} · p95 ${fmt(lat.p95)}`;
    $("dlq").textContent = fmt(live.dlq_per_s, 2);
    $("model").textContent = live.model_version ?? "–";
    $("swap").textContent = live.last_swap_us
      ? "last swap " + new Date(live.last_swap_us / 1000).toLocaleTimeString() : "no swap seen";
    $("hr").textContent = fmt(live.online_hr10, 3);
    $("judged").textContent = live.judged ? `over ${live.judged} events` : "no replay running";
    $("clients").textContent = live.feed_clients;
    for (const [key, value] of [["eps", live.lists_per_s], ["p99", lat.p99]]) {
      history[key].push(value);
      if (history[key].length > KEEP) history[key].shift();
      spark(`${key}-line`, history[key]);
    }
  } catch (err) {
    $("eps").textContent = "API unreachable";
  }
}

// The panel: per variant its users, lists and the two headline metrics with their 95%
// intervals, then the verdict and, for an A/B test, the sample-ratio check. Each status
// read is a look of the always-valid tests, so reading it often is harmless; every 5 s is
// plenty for figures that move with users' next events.
const EXPERIMENT_EVERY_MS = 5000;
const PANEL_METRICS = ["NDCG@10", "HR@10"];

function figure(m) {
  return m ? `${fmt(m.mean, 4)} <span class="small">[${fmt(m.low, 4)}, ${fmt(m.high, 4)}]</span>` : "–";
}

function renderExperiment(status) {
  const e = status.experiment;
  $("experiment-name").textContent = `${e.name} · ${e.mode} · ${e.state} · ` +
    `${status.workers} worker${status.workers === 1 ? "" : "s"} reporting`;
  const rows = status.variants.map((v) => `<tr><td>${escape(v.name)}</td><td>${escape(v.model)}</td>` +
    `<td>${v.users}</td><td>${v.lists}</td>` +
    PANEL_METRICS.map((k) => `<td>${figure(v.metrics[k])}</td>`).join("") + "</tr>");
  const srm = e.mode !== "ab" ? "" : status.sample_ratio_mismatch
    ? ` · <span class="bad">sample ratio MISMATCH (p ${fmt(status.sample_ratio_p, 4)}): the split is broken</span>`
    : ` · sample ratio ok (p ${fmt(status.sample_ratio_p, 4)})`;
  const wins = status.tests.interleaving ? ` · credits ${status.tests.interleaving.wins.join(" : ")}` : "";
  const winner = status.winner ?? e.winner;
  const failed = Object.entries(status.load_failures ?? {}).map(([v, error]) =>
    `<br><span class="bad">variant ${escape(v)} failed to load: the control serves its users (${escape(error)})</span>`).join("");
  $("experiment").innerHTML = `<table><tr><th>variant</th><th>model</th><th>users</th>` +
    `<th>lists</th>${PANEL_METRICS.map((k) => `<th>${k}</th>`).join("")}</tr>${rows.join("")}</table>` +
    `<p>verdict <b>${escape(status.verdict)}</b>${winner ? ` · winner <b>${escape(winner)}</b>` : ""}${wins}${srm}${failed}</p>`;
}

async function pollExperiment() {
  try {
    const reply = await fetch("/v1/experiments");
    if (!reply.ok) throw new Error(`${reply.status}`);
    const { experiments, running } = await reply.json();
    if (!experiments.length) {
      $("experiment-name").textContent = "";
      $("experiment").textContent = "no experiment declared";
      return;
    }
    const name = running ?? experiments[experiments.length - 1].name; // oldest first
    const status = await fetch(`/v1/experiments/${encodeURIComponent(name)}`);
    if (!status.ok) throw new Error(`${status.status}`);
    renderExperiment(await status.json());
  } catch (err) {
    $("experiment").textContent = `experiments unavailable (${err.message})`;
  }
}

let source = null;
function render(list) {
  // The catalogue's title where it has one (the id on hover), else the bare id.
  const name = (it) => (it.title
    ? `<span title="${escape(it.item_id)}">${escape(it.title)}</span>` : escape(it.item_id));
  const rows = list.items.map((it, i) =>
    `<tr><td>${i + 1}</td><td>${name(it)}</td><td>${it.score.toFixed(3)}</td></tr>`);
  $("feed").innerHTML = `<p class="small">path <b>${escape(list.path)}</b> · model ${escape(list.model_version ?? "–")}` +
    ` · updated ${list.published_us ? new Date(list.published_us / 1000).toLocaleTimeString() : "–"}</p>` +
    `<table><tr><th>#</th><th>item</th><th>score</th></tr>${rows.join("")}</table>`;
}
function escape(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

$("watch").addEventListener("submit", (ev) => {
  ev.preventDefault();
  if (source) source.close();
  const user = $("user").value.trim();
  let updates = 0;
  source = new EventSource(`/v1/users/${encodeURIComponent(user)}/feed`);
  source.addEventListener("recommendations", (msg) => {
    updates += 1;
    $("feed-status").textContent = `${updates} update${updates === 1 ? "" : "s"} received`;
    render(JSON.parse(msg.data));
  });
  source.onerror = () => { $("feed-status").textContent = "reconnecting…"; };
});

poll();
setInterval(poll, 1000);
pollExperiment();
setInterval(pollExperiment, EXPERIMENT_EVERY_MS);
