// Bundles the demo with esbuild into demo/dist/ (app.js + index.html + style.css),
// the directory the server serves at /demo/ when DEMO_DIR points at it.
import { build } from "esbuild";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const out = path.join(here, "dist");
fs.rmSync(out, { recursive: true, force: true });
fs.mkdirSync(out, { recursive: true });
await build({
  entryPoints: [path.join(here, "main.ts")],
  outfile: path.join(out, "app.js"),
  bundle: true,
  format: "esm",
  platform: "browser",
  target: ["es2022"],
  minify: true,
  sourcemap: true,
  logLevel: "warning",
});
for (const file of ["index.html", "style.css"]) fs.copyFileSync(path.join(here, file), path.join(out, file));
console.log(`demo built into ${path.relative(process.cwd(), out) || "."}`);
