#!/usr/bin/env bash
# The package as a user gets it: `npm pack`, then in an empty folder install only the
# tarball, type-check a TypeScript file that imports the public API (tsc --noEmit,
# NodeNext resolution through `exports`), and run an ES module that imports it by
# name and talks to the real server binary. Run by scripts/test.sh after the build.
set -euo pipefail
cd "$(dirname "$0")/.."
here="$PWD"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

tarball="$(npm pack --silent --pack-destination "$work" | tail -n 1)"
contents="$(tar -tzf "$work/$tarball" | sort)"
echo "packed $tarball: $(echo "$contents" | wc -l) files"
for must in package/dist/index.js package/dist/index.d.ts package/README.md package/CHANGELOG.md package/package.json; do
  grep -qx "$must" <<<"$contents" || { echo "the tarball lacks $must" >&2; exit 1; }
done
if grep -Eq '^package/(test|demo|node_modules|scripts)/' <<<"$contents"; then
  echo "the tarball carries tests, the demo or scripts" >&2
  exit 1
fi

app="$work/app"
mkdir "$app"
cp scripts/pack-smoke/smoke.mjs scripts/pack-smoke/smoke.ts scripts/pack-smoke/tsconfig.json "$app/"
printf '{"name": "smoke", "private": true, "type": "module"}\n' >"$app/package.json"
(cd "$app" && npm install --no-audit --no-fund --loglevel=error "$work/$tarball")

# The compiler comes from this package's devDependencies; the types it checks come
# only from the smoke folder's node_modules.
(cd "$app" && "$here/node_modules/.bin/tsc" -p tsconfig.json)
echo "ok: smoke.ts type-checks against the installed package"

(cd "$app" && COURSECAST_TEST_HELPERS="$here/test/helpers.mjs" node smoke.mjs)
