// msiv2-bench scenario 7: @azure/msal-node's ManagedIdentityApplication (pinned in
// tools/peer/package.json) against msiv2-sim's IMDS v1 endpoint: time to the first token
// (application created inside the clock) and the latency of cached-token calls.
//   node peer_bench.mjs <ready-file.json> <cached calls>
// Prints one JSON line: {"first_ms":..,"cached_p50_us":..,"cached_p99_us":..,"n":..}
import fs from "node:fs";

const ready = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const n = Number(process.argv[3] || 1000);
process.env.AZURE_POD_IDENTITY_AUTHORITY_HOST = ready.imds;
const { ManagedIdentityApplication } = await import("@azure/msal-node");
const resource = "https://management.azure.com";

const t0 = process.hrtime.bigint();
const app = new ManagedIdentityApplication({});
const first = await app.acquireToken({ resource });
const firstMs = Number(process.hrtime.bigint() - t0) / 1e6;
if (!first.accessToken) throw new Error("no access token");

const lat = [];
for (let i = 0; i < n; i++) {
  const s = process.hrtime.bigint();
  const r = await app.acquireToken({ resource });
  lat.push(Number(process.hrtime.bigint() - s) / 1e3);
  if (!r.fromCache) throw new Error("msal-node did not serve from its cache");
}
lat.sort((a, b) => a - b);
const pct = (p) => lat[Math.min(lat.length - 1, Math.round((p / 100) * (lat.length - 1)))];
console.log(JSON.stringify({ first_ms: firstMs, cached_p50_us: pct(50), cached_p99_us: pct(99), n }));
