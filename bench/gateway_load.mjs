// Load for bench/gateway.py: HTTP requests over kept-alive connections, and publish -> SSE latency.
//   node gateway_load.mjs post URL TOKEN SECONDS CONNECTIONS BATCH   -> {"requests", "events", "seconds", "statuses"}
//   node gateway_load.mjs latency BASE TOPIC TOKEN RATE SECONDS      -> {"sent", "received", "p50_ms", "p99_ms", "max_ms"}
import http from "node:http";
import { performance } from "node:perf_hooks";

const [mode, ...args] = process.argv.slice(2);
const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
const run = `${process.pid}-${Date.now()}`;
let counter = 0;

function event(data) {
  counter += 1;
  return { specversion: "1.0", id: `${run}-${counter}`, source: "/bench", type: "bench.event", data };
}

function post(url, token, body, contentType) {
  return new Promise((resolve, reject) => {
    const request = http.request(url, {
      method: "POST", agent,
      headers: { "content-type": contentType, "content-length": Buffer.byteLength(body),
                 ...(token ? { authorization: `Bearer ${token}` } : {}) },
    }, (response) => {
      response.resume();
      response.on("end", () => resolve(response.statusCode));
    });
    request.on("error", reject);
    request.end(body);
  });
}

async function load(url, token, seconds, connections, batch) {
  const statuses = {};
  let requests = 0;
  const end = performance.now() + seconds * 1000;
  const started = performance.now();
  async function connection() {
    while (performance.now() < end) {
      const body = batch > 1
        ? JSON.stringify(Array.from({ length: batch }, (_, i) => event({ i, note: "a bench event" })))
        : JSON.stringify(event({ i: 0, note: "a bench event" }));
      const type = batch > 1 ? "application/cloudevents-batch+json" : "application/cloudevents+json";
      const status = await post(url, token, body, type);
      statuses[status] = (statuses[status] || 0) + 1;
      requests += 1;
    }
  }
  await Promise.all(Array.from({ length: connections }, connection));
  const elapsed = (performance.now() - started) / 1000;
  return { requests, events: requests * batch, seconds: elapsed, statuses };
}

async function latency(base, topic, token, rate, seconds) {
  const latencies = [];
  const sent = new Map();
  const auth = token ? { authorization: `Bearer ${token}` } : {};
  const stream = await fetch(`${base}/topics/${topic}/events?from=latest`, { headers: auth });
  const reader = stream.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  const total = Math.round(rate * seconds);
  const reading = (async () => {
    while (latencies.length < total) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const frame = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const line = frame.split("\n").find((l) => l.startsWith("data: "));
        if (!line) continue;
        const at = sent.get(JSON.parse(line.slice(6)).id);
        if (at !== undefined) latencies.push(performance.now() - at);
      }
    }
  })();
  await new Promise((resolve) => setTimeout(resolve, 300)); // the stream is open
  const started = performance.now();
  for (let n = 0; n < total; n += 1) {
    const due = started + (n * 1000) / rate;
    const wait = due - performance.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    const e = event({ n });
    sent.set(e.id, performance.now());
    post(`${base}/topics/${topic}/events`, token, JSON.stringify(e), "application/cloudevents+json");
  }
  const deadline = setTimeout(() => reader.cancel(), 10000);
  await reading;
  clearTimeout(deadline);
  await reader.cancel().catch(() => {});
  latencies.sort((a, b) => a - b);
  const at = (q) => latencies[Math.max(0, Math.ceil(latencies.length * q) - 1)];
  return { sent: total, received: latencies.length, p50_ms: at(0.5), p99_ms: at(0.99), max_ms: at(1) };
}

const result = mode === "post"
  ? await load(args[0], args[1], Number(args[2]), Number(args[3]), Number(args[4]))
  : await latency(args[0], args[1], args[2], Number(args[3]), Number(args[4]));
agent.destroy();
process.stdout.write(JSON.stringify(result) + "\n", () => process.exit(0));
