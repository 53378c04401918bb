// The dashboard: polls /v1/live once a second and draws two sparklines in plain SVG;
// the watch box follows one user's list over Server-Sent Events.
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
