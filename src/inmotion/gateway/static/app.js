// The gateway's dashboard: plain DOM and fetch, no framework, no CDN. Each page reads the admin
// API with the token kept in this browser's localStorage and refreshes itself every 2 s.
"use strict";

const REFRESH_MS = 2000;
const HISTORY = 60; // points a chart keeps
const page = document.getElementById("page");
const statusLine = document.getElementById("status");
const tokenInput = document.getElementById("token");
let timer = null;
let tail = null; // the live tail's AbortController
const history = { ends: {}, lag: {} }; // samples over time, by topic and by group

function token() { return localStorage.getItem("inmotion.token") || ""; }

document.getElementById("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  localStorage.setItem("inmotion.token", tokenInput.value.trim());
  tokenInput.value = "";
  route();
});

function say(text, error = false) {
  statusLine.textContent = text;
  statusLine.className = error ? "error" : "";
}

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (token()) headers.Authorization = `Bearer ${token()}`;
  const answer = await fetch(path, { ...options, headers });
  if (!answer.ok) {
    let detail = answer.statusText;
    try { detail = (await answer.json()).detail || detail; } catch (_) { /* not a problem body */ }
    throw new Error(`${answer.status}: ${detail}`);
  }
  return answer.status === 204 ? null : answer.json();
}

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child ?? "")));
  }
  return node;
}

function table(headings, rows) {
  return el("table", {},
    el("thead", {}, el("tr", {}, headings.map((h) => el("th", { class: /^(partitions|records|lag|members|offset|committed|latest|per s)/.test(h) ? "num" : "" }, h)))),
    el("tbody", {}, rows.map((cells) => el("tr", {}, cells.map((cell) =>
      cell instanceof Node ? el("td", {}, cell) : el("td", { class: typeof cell === "number" ? "num" : "" }, cell))))));
}

function chart(points, label) {
  const width = 240, height = 48;
  const max = Math.max(1, ...points);
  const step = width / Math.max(1, HISTORY - 1);
  const coordinates = points.map((value, i) => `${(i * step).toFixed(1)},${(height - 2 - (value / max) * (height - 4)).toFixed(1)}`);
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("aria-label", label);
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", coordinates.join(" "));
  svg.append(line);
  return svg;
}

function remember(store, key, value) {
  const series = store[key] || (store[key] = []);
  series.push(value);
  if (series.length > HISTORY) series.shift();
  return series;
}

// --- pages -----------------------------------------------------------------------------------

async function topicsPage() {
  const { topics } = await api("/topics");
  const now = Date.now();
  const rows = topics.map((topic) => {
    const end = topic.partitions.reduce((sum, p) => sum + p.latest, 0);
    const samples = remember(history.ends, topic.name, { end, at: now });
    const rates = samples.slice(1).map((s, i) => Math.max(0, (s.end - samples[i].end) / ((s.at - samples[i].at) / 1000)));
    const rate = rates.length ? rates[rates.length - 1] : 0;
    return [
      el("a", { href: `#/topic/${encodeURIComponent(topic.name)}` }, topic.name),
      topic.partitions.length, topic.records,
      topic.retention_ms == null ? "forever" : `${topic.retention_ms / 1000} s`,
      topic.compact ? "compacted" : "", Math.round(rate), chart(rates, `${topic.name} events per second`),
    ];
  });
  return [el("h1", {}, "Topics"), table(["topic", "partitions", "records", "retention", "", "per s", "throughput"], rows)];
}

async function topicPage(name) {
  const topic = await api(`/topics/${encodeURIComponent(name)}`);
  return [
    el("h1", {}, `Topic ${topic.name}`),
    table(["partition", "earliest", "latest"], topic.partitions.map((p) => [p.partition, p.earliest, p.latest])),
    el("a", { href: `#/tail/${encodeURIComponent(topic.name)}` }, "Tail its events"),
  ];
}

async function groupsPage() {
  const { groups } = await api("/groups");
  return [
    el("h1", {}, "Consumer groups"),
    table(["group", "members", "topics", "lag"], groups.map((g) => [
      el("a", { href: `#/group/${encodeURIComponent(g.group)}` }, g.group), g.members, g.topics.join(", "),
      el("span", { class: g.lag ? "lag" : "" }, g.lag),
    ])),
  ];
}

async function groupPage(name) {
  const group = await api(`/groups/${encodeURIComponent(name)}`);
  const lags = remember(history.lag, name, group.lag);
  return [
    el("h1", {}, `Group ${group.group}`),
    el("p", {}, `total lag `, el("span", { class: group.lag ? "lag" : "", id: "group-lag" }, group.lag)),
    chart(lags, `${name} lag over time`),
    el("h2", {}, "Members"),
    table(["member", "host", "pid", "topics", "last heartbeat"], group.members.map((m) =>
      [m.member, m.host, m.pid, m.topics.join(", "), m.last_heartbeat_s == null ? "-" : `${m.last_heartbeat_s} s ago`])),
    el("h2", {}, "Partitions"),
    table(["topic", "partition", "owner", "committed", "latest", "lag"], group.partitions.map((p) =>
      [p.topic, p.partition, p.owner || "-", p.committed ?? "-", p.latest, el("span", { class: p.lag ? "lag" : "" }, p.lag)])),
  ];
}

async function deadLettersPage() {
  const { entries } = await api("/dlq");
  const redrive = (entry) => async () => {
    try {
      const { redriven } = await api(`/dlq/${encodeURIComponent(entry.dlq)}/redrive`, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ ids: [entry.id], again: true }),
      });
      say(`redrove ${redriven.length} event(s) from ${entry.dlq} to ${redriven.map((r) => r.to).join(", ")}`);
    } catch (error) { say(`redrive failed: ${error.message}`, true); }
  };
  return [
    el("h1", {}, "Dead letters"),
    entries.length === 0 ? el("p", {}, "No dead-lettered events.") :
      table(["dead-letter topic", "offset", "from", "type", "id", "error", "attempts", ""], entries.map((e) => [
        e.dlq, e.dlq_offset, `${e.topic}/${e.partition}@${e.offset}`, e.type || "(not a CloudEvent)", e.id || "",
        `${(e.error_type || "").split(".").pop()}: ${e.error_message || ""}`, e.attempts,
        e.id ? el("button", { class: "redrive", onclick: redrive(e) }, "Redrive") : "",
      ])),
  ];
}

function tailPage(topicName = "") {
  const topic = el("input", { id: "tail-topic", value: topicName, placeholder: "topic" });
  const pattern = el("textarea", { id: "tail-pattern", placeholder: '{"type": [{"prefix": "shop."}]}' });
  const list = el("div", { class: "events", id: "tail-events" });
  const start = async () => {
    if (tail) tail.abort();
    tail = new AbortController();
    list.replaceChildren();
    const query = new URLSearchParams({ from: "latest" });
    if (pattern.value.trim()) query.set("pattern", pattern.value.trim());
    try {
      const answer = await fetch(`/topics/${encodeURIComponent(topic.value)}/events?${query}`, {
        headers: token() ? { Authorization: `Bearer ${token()}` } : {}, signal: tail.signal,
      });
      if (!answer.ok) { say(`${answer.status}: ${(await answer.json()).detail}`, true); return; }
      say(`tailing ${topic.value}`);
      const reader = answer.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const data = buffer.slice(0, end).split("\n").find((line) => line.startsWith("data: "));
          buffer = buffer.slice(end + 2);
          if (!data) continue;
          const event = JSON.parse(data.slice(6));
          list.prepend(el("div", {}, `${event.partition}@${event.offset} ${event.type} `,
            el("a", { href: `#/trace/${encodeURIComponent(event.id)}` }, event.id), ` ${JSON.stringify(event.data ?? null)}`));
        }
      }
    } catch (error) { if (error.name !== "AbortError") say(`tail failed: ${error.message}`, true); }
  };
  return [el("h1", {}, "Live tail"), el("p", {}, topic, " ", el("button", { id: "tail-start", onclick: start }, "Tail")),
    el("p", {}, "Only events that match this pattern (optional):"), pattern, list];
}

async function tracePage(id) {
  const flow = await api(`/trace/${encodeURIComponent(id)}`);
  return [
    el("h1", {}, `Flow ${flow.correlation}`),
    el("div", { class: "tree" }, flow.events.map((e) =>
      el("div", {}, `${"   ".repeat(e.depth)}${e.depth ? "└─ " : ""}${e.type}  ${e.topic} ${e.partition}@${e.offset}  ${e.time || ""}  id ${e.id}`))),
  ];
}

function rulesPage() {
  const pattern = el("textarea", { id: "rule-pattern" }, '{"type": ["shop.order.placed"], "data": {"total": [{"numeric": [">", 100]}]}}');
  const event = el("textarea", { id: "rule-event" }, '{"type": "shop.order.placed", "data": {"total": 250}}');
  const verdict = el("div", { id: "rule-verdict" });
  const check = async () => {
    try {
      const answer = await api("/rules/test", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ pattern: JSON.parse(pattern.value), event: JSON.parse(event.value) }),
      });
      verdict.replaceChildren(el("p", { class: answer.match ? "match" : "nomatch" }, answer.match ? "match" : "no match"),
        el("pre", {}, answer.explanation.join("\n")));
    } catch (error) { verdict.replaceChildren(el("p", { class: "nomatch" }, error.message)); }
  };
  return [el("h1", {}, "Pattern tester"), el("p", {}, "Pattern:"), pattern, el("p", {}, "Event:"), event,
    el("p", {}, el("button", { id: "rule-test", onclick: check }, "Test")), verdict];
}

// --- routing ---------------------------------------------------------------------------------

const ROUTES = [
  [/^#\/topics$/, topicsPage, true], [/^#\/topic\/(.+)$/, topicPage, true],
  [/^#\/groups$/, groupsPage, true], [/^#\/group\/(.+)$/, groupPage, true],
  [/^#\/dlq$/, deadLettersPage, true], [/^#\/tail(?:\/(.+))?$/, tailPage, false],
  [/^#\/trace\/(.+)$/, tracePage, false], [/^#\/rules$/, rulesPage, false],
];

async function render(view, argument) {
  try {
    page.replaceChildren(...(await view(argument)));
    if (!statusLine.classList.contains("error") || view === topicsPage) say(`updated ${new Date().toLocaleTimeString()}`);
  } catch (error) {
    say(error.message.startsWith("401") ? `${error.message}: enter an admin token above` : error.message, true);
  }
}

function route() {
  clearInterval(timer);
  if (tail) { tail.abort(); tail = null; }
  const hash = location.hash || "#/topics";
  for (const link of document.querySelectorAll("header nav a")) link.classList.toggle("active", hash.startsWith(link.getAttribute("href")));
  for (const [pattern, view, refresh] of ROUTES) {
    const match = hash.match(pattern);
    if (!match) continue;
    const argument = match[1] === undefined ? undefined : decodeURIComponent(match[1]);
    say("");
    render(view, argument);
    if (refresh) timer = setInterval(() => render(view, argument), REFRESH_MS);
    return;
  }
  location.hash = "#/topics";
}

window.addEventListener("hashchange", route);
route();
