// Reading a node's /metrics (Prometheus text) straight from the node, not through
// nginx: how the cluster suite learns which node holds which clients.

/** Every sample of `text` as {name, labels, value}. */
export function parseMetrics(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    for (const [, key, value] of (m[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[key] = value;
    }
    samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return samples;
}

/** The sum of `name`'s samples whose labels include `labels` (0 when there are none). */
export function sumOf(samples, name, labels = {}) {
  return samples
    .filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    .reduce((total, s) => total + s.value, 0);
}

/** Fetches and parses `${nodeUrl}/metrics`. */
export async function scrape(nodeUrl) {
  const res = await fetch(`${nodeUrl}/metrics`, { signal: AbortSignal.timeout(5000) });
  if (res.status !== 200) throw new Error(`GET ${nodeUrl}/metrics: ${res.status}`);
  return parseMetrics(await res.text());
}
