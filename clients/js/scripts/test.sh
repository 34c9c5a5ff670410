#!/usr/bin/env bash
# Installs, type-checks and builds the client package and its demo, runs the package
# tests against the real server binary (target/debug/coursecast, or COURSECAST_BIN),
# then packs it and installs the tarball in an empty folder (scripts/pack-test.sh).
# Needs Node 20+ and npm.
set -euo pipefail
cd "$(dirname "$0")/.."
npm ci --no-audit --no-fund
npm run build
npm run build:demo
npm test
scripts/pack-test.sh
