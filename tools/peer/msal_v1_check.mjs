// Runs the real @azure/msal-node managed identity client, unchanged, against msiv2-sim's IMDS
// v1 endpoint (through AZURE_POD_IDENTITY_AUTHORITY_HOST), for every kind of identity, and
// calls the simulator's resource with each bearer token. Prints one line per check and a
// closing "N passed, N failed" line; exits 1 on any failure.
//   node msal_v1_check.mjs <ready-file.json>
import fs from "node:fs";
import https from "node:https";

const ready = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
process.env.AZURE_POD_IDENTITY_AUTHORITY_HOST = ready.imds;
const { ManagedIdentityApplication } = await import("@azure/msal-node");

const ca = fs.readFileSync(ready.ca_file);
let passed = 0;
let failed = 0;
function check(name, ok, detail = "") {
  if (ok) passed++; else failed++;
  console.log(`${ok ? "ok  " : "FAIL"} ${name}${detail ? " - " + detail : ""}`);
}

function callResource(token) {
  return new Promise((resolve) => {
    const url = new URL(ready.resource + "/whoami");
    const req = https.request({
      host: url.hostname, port: url.port, path: url.pathname, method: "GET", ca,
      headers: { Authorization: `Bearer ${token}` },
    }, (res) => { res.resume(); res.on("end", () => resolve(res.statusCode)); });
    req.on("error", (e) => resolve(`error ${e.code}`));
    req.end();
  });
}

const system = ready.identities.find((i) => i.type === "SystemAssigned");
const user = ready.identities.filter((i) => i.type === "UserAssigned");
const cases = [
  ["system-assigned", {}],
  ["user-assigned by client id", { userAssignedClientId: user[0].client_id }],
  ["user-assigned by object id", { userAssignedObjectId: user[0].object_id }],
  ["user-assigned by resource id", { userAssignedResourceId: user[0].resource_id }],
];
if (!system) cases.shift();

for (const [name, params] of cases) {
  try {
    const app = new ManagedIdentityApplication(
      Object.keys(params).length ? { managedIdentityIdParams: params } : {});
    const first = await app.acquireToken({ resource: "https://management.azure.com" });
    const inAnHour = Date.now() + 3600 * 1000;
    check(`${name}: token`, !!first.accessToken && first.tokenType === "Bearer" &&
          first.expiresOn.getTime() > inAnHour, `expires ${first.expiresOn.toISOString()}`);
    const second = await app.acquireToken({ resource: "https://management.azure.com" });
    check(`${name}: second call served from msal's cache`, second.fromCache === true);
    const status = await callResource(first.accessToken);
    check(`${name}: resource accepts the bearer token`, status === 200, `HTTP ${status}`);
  } catch (e) {
    check(`${name}`, false, `${e.errorCode || e.name}: ${e.message}`);
  }
}

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
