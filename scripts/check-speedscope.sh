#!/usr/bin/env bash
# Loads a real backtest's Chrome trace in speedscope (npm) in headless Chromium, the way
# `speedscope FILE` does, and checks its Sandwich view: one row per hook, each frame
# whole (per-event args would split a frame into thousands of rows).
# Usage: scripts/check-speedscope.sh SPEEDSCOPE_DIR [BINARY]
#   SPEEDSCOPE_DIR: where `npm install speedscope` put node_modules/speedscope
set -euo pipefail
speedscope=$1/node_modules/speedscope/dist/release/index.html
bin=${2:-target/debug/backtest-perf}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$bin" backtest --strategy sma-crossover --trace --out "$work" > /dev/null
trace="$work/sma-crossover.trace.json"
# What `speedscope FILE` writes: a script that hands the file to the page.
printf 'speedscope.loadFileFromBase64("sma-crossover.trace.json", "%s")' "$(base64 -w0 "$trace")" > "$work/profile.js"

chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --user-data-dir="$work/profile" --allow-file-access-from-files \
  --virtual-time-budget=10000 --window-size=1400,900 \
  --dump-dom "file://$speedscope#localProfilePath=$work/profile.js&view=sandwich" 2> /dev/null > "$work/dom.html"

for hook in tick getSignal getCandles getAveragePrice backtest; do
  rows=$(grep -o ">$hook<" "$work/dom.html" | wc -l)
  if [ "$rows" -ne 1 ]; then
    echo "check-speedscope: expected one Sandwich row for $hook, found $rows" >&2
    exit 1
  fi
done
echo "check-speedscope: speedscope shows one whole frame per hook (tick, getSignal, getCandles, getAveragePrice, backtest)"
