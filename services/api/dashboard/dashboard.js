// The dashboard: polls /v1/live once a second and draws two sparklines in plain SVG;
// the experiments panel polls /v1/experiments every few seconds and shows the running
// experiment (else the latest); the watch box follows one user's list over Server-Sent
// Events. A poll starts only after the last one ended (never two at once, whose answers
// could land out of order), gives up after a timeout, and waits longer while it fails:
// with Kafka away an experiment call holds a server thread up to a minute, and an open
// tab polling every 5 s regardless filled the API's few experiment slots.
"use strict";
const history = { eps: [], p99: [] };
const KEEP = 120;
const $ = (id) => document.getElementById(id);
const fmt = (x, digits = 1) => (x === null || x === undefined ? "–" : Number(x).toFixed(digits));

function spark(id, values) {
  const max = Math.max(1e-9, ...values.filter((v) => v !== null && v !== undefined));
  const start = KEEP - values.length; // newest at the right edge, history grows leftwards
  // A second with no lists has no latency: left out, not drawn as 0 ms.
  const points = values.map((v, i) => (v === null || v === undefined ? null
    : `${((start + i) * 120) / (KEEP - 1)},${40 - (v / max) * 38}`)).filter((p) => p !== null);
  $(id).setAttribute("points", points.join(" "));
}

// ``read(signal)`` every ``everyMs`` once the last read ended; after a failure, twice as
// long each time up to ``mostMs``; each read aborted after ``timeoutMs``.
function every(read, everyMs, mostMs, timeoutMs = 20000) {
  let waitMs = everyMs;
  const next = async () => {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), timeoutMs);
    try {
      await read(abort.signal);
      waitMs = everyMs;
    } catch (err) {
      waitMs = Math.min(waitMs * 2, mostMs);
    } finally {
      clearTimeout(timer);
      setTimeout(next, waitMs);
    }
  };
  next();
}

async function answer(path, signal) {
  const reply = await fetch(path, { signal });
  if (!reply.ok) throw new Error(`${reply.status}`);
  return reply.json();
}

async function poll(signal) {
  try {
    const live = await answer("/v1/live", signal);
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
    $("eps").textContent = err.name === "AbortError" ? "API slow" : `API unreachable (${err.message})`;
    for (const id of ["p99", "pcts", "dlq", "model", "swap", "hr", "judged", "clients"]) {
      $(id).textContent = "–"; // not last minute's figures, shown as current
    }
    throw err;
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

// A/B: per variant its users, lists and metrics. Interleaving judges no variant alone:
// every user sees both models' items, and the credits are the figures (their per-variant
// tallies stay empty, which the table showed as 0 users and 0 lists).
function experimentFigures(status) {
  const e = status.experiment;
  const test = status.tests.interleaving;
  if (e.mode === "interleave" && test) {
    const [a, b] = status.variants.map((v) => escape(v.name));
    const models = status.variants.map((v) => `${escape(v.name)}: ${escape(v.model)}`).join(" · ");
    return `<p>${models}</p><p>${test.users} users · credits ${a} ${test.wins[0]} : ${b} ` +
      `${test.wins[1]} · share to ${a} ${fmt(test.estimate, 3)} <span class="small">[` +
      `${fmt(test.low, 3)}, ${fmt(test.high, 3)}]</span> · p ` +
      `${test.p_value < 1e-4 ? "&lt; 0.0001" : fmt(test.p_value, 4)}</p>`;
  }
  const rows = status.variants.map((v) => `<tr><td>${escape(v.name)}</td><td>${escape(v.model)}</td>` +
    `<td>${v.users}</td><td>${v.lists}</td>` +
    PANEL_METRICS.map((k) => `<td>${figure(v.metrics[k])}</td>`).join("") + "</tr>");
  return `<table><tr><th>variant</th><th>model</th><th>users</th>` +
    `<th>lists</th>${PANEL_METRICS.map((k) => `<th>${k}</th>`).join("")}</tr>${rows.join("")}</table>`;
}

function renderExperiment(status) {
  const e = status.experiment;
  $("experiment-name").textContent = `${e.name} · ${e.mode} · ${e.state} · ` +
    `${status.workers} worker${status.workers === 1 ? "" : "s"} reporting`;
  const srm = e.mode !== "ab" ? "" : status.sample_ratio_mismatch
    ? ` · <span class="bad">sample ratio MISMATCH (p ${fmt(status.sample_ratio_p, 4)}): the split is broken</span>`
    : ` · sample ratio ok (p ${fmt(status.sample_ratio_p, 4)})`;
  const winner = status.winner ?? e.winner;
  const failed = Object.entries(status.load_failures ?? {}).map(([v, error]) =>
    `<br><span class="bad">variant ${escape(v)} failed to load: the control serves its users (${escape(error)})</span>`).join("");
  $("experiment").innerHTML = experimentFigures(status) +
    `<p>verdict <b>${escape(status.verdict)}</b>${winner ? ` · winner <b>${escape(winner)}</b>` : ""}${srm}${failed}</p>`;
}

async function pollExperiment(signal) {
  try {
    const { experiments, running } = await answer("/v1/experiments", signal);
    if (!experiments.length) {
      $("experiment-name").textContent = "";
      $("experiment").textContent = "no experiment declared";
      return;
    }
    const name = running ?? experiments[experiments.length - 1].name; // oldest first
    renderExperiment(await answer(`/v1/experiments/${encodeURIComponent(name)}`, signal));
  } catch (err) {
    $("experiment").textContent = `experiments unavailable (${err.name === "AbortError" ? "timed out" : err.message}); retrying less often`;
    throw err;
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
  source.onerror = () => {
    // EventSource retries a dropped stream, but not a refused one (401, 503 when the
    // feeds are full, 422 for a malformed id): it closes, and would never reconnect.
    $("feed-status").textContent = source.readyState === EventSource.CLOSED
      ? "stopped: the API refused this feed (watch again to retry)" : "reconnecting…";
  };
});

every(poll, 1000, 10000);
every(pollExperiment, EXPERIMENT_EVERY_MS, 60000);
