// Validates an AsyncAPI document with the official parser (schema, $refs, the
// spec's semantic rules). Errors fail; warnings and hints are printed. The event
// names are checked against the server's code by tests/api/asyncapi.rs.
import fs from "node:fs";
import { Parser } from "@asyncapi/parser";

const file = process.argv[2];
const { document, diagnostics } = await new Parser().parse(fs.readFileSync(file, "utf8"));
const levels = ["error", "warning", "info", "hint"];
for (const d of diagnostics) console.log(`${levels[d.severity] ?? d.severity}: ${d.code} at ${d.path.join(".") || "/"}: ${d.message}`);
const errors = diagnostics.filter((d) => d.severity === 0);
if (!document || errors.length > 0) {
  console.error(`${file}: not a valid AsyncAPI document (${errors.length} errors)`);
  process.exit(1);
}
console.log(`ok: ${file} is valid AsyncAPI ${document.version()} (${document.channels().length} channels, ${document.operations().length} operations)`);
