// The client's public types checked against the OpenAPI document the server serves:
// types generated from it with openapi-typescript (installed in openapi/, apart from
// the package: it needs TypeScript 5's compiler API), then test/openapi/types.ts
// type-checked against them.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, test } from "node:test";
import { startServer } from "./helpers.mjs";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const generator = path.join(root, "openapi/node_modules/.bin/openapi-typescript");
const tsc = path.join(root, "node_modules/.bin/tsc");
const generated = path.join(root, "openapi/generated");

let server;
before(async () => {
  server = await startServer({ students: 0 });
});
after(async () => {
  await server?.stop();
});

test("the client's types fit the types generated from GET /api/openapi.json", async () => {
  assert.ok(fs.existsSync(generator), `no ${generator}: run npm ci in clients/js/openapi (scripts/test.sh does)`);
  const res = await fetch(`${server.url}/api/openapi.json`);
  assert.equal(res.status, 200);
  const document = await res.json();
  assert.equal(document.openapi, "3.1.0");
  fs.mkdirSync(generated, { recursive: true });
  const documentFile = path.join(generated, "openapi.json");
  fs.writeFileSync(documentFile, JSON.stringify(document, null, 2));
  // Objects without declared properties (annotations, analysis input) take any keys.
  execFileSync(generator, [documentFile, "--empty-objects-unknown", "-o", path.join(generated, "schema.d.ts")], {
    stdio: "pipe",
  });
  try {
    execFileSync(tsc, ["-p", path.join(root, "test/openapi/tsconfig.json")], { stdio: "pipe", cwd: root });
  } catch (err) {
    assert.fail(`the client's types do not fit the document:\n${err.stdout}${err.stderr}`);
  }
});
