#!/usr/bin/env bash
# Installs, type-checks and builds the client package and its demo, runs the package
# tests against the real server binary (target/debug/coursecast, or COURSECAST_BIN),
# among them the public types checked against the server's OpenAPI document, then
# packs it and installs the tarball in an empty folder (scripts/pack-test.sh).
# Needs Node 20+ and npm.
set -euo pipefail
cd "$(dirname "$0")/.."
npm ci --no-audit --no-fund
# openapi-typescript, for test/openapi-types.test.mjs (apart: it needs TypeScript 5).
(cd openapi && npm ci --no-audit --no-fund --loglevel=error)
npm run build
npm run build:demo
npm test
scripts/pack-test.sh
