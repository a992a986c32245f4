#!/usr/bin/env bash
# Renders a real HTML report in headless Chromium (Debian's `chromium`) to a PNG and
# checks that the page loaded cleanly: nothing fetched from elsewhere, no console
# messages, every chart in the DOM, a picture of a real size.
# Usage: scripts/check-html.sh [BINARY]   (default: target/debug/backtest-perf)
set -euo pipefail
bin=${1:-target/debug/backtest-perf}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$bin" backtest --strategy sma-crossover --format html --timeline --out "$work" > /dev/null
page="$work/sma-crossover.html"

# Self-contained: no attribute or style that would load anything.
if grep -Eq '(src|href)=|url\(|@import' "$page"; then
  echo "check-html: $page loads something from elsewhere" >&2
  exit 1
fi

flags=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking
       --disable-component-update --disable-sync --user-data-dir="$work/profile" --window-size=1200,1800
       --enable-logging=stderr --v=0)
chromium "${flags[@]}" --screenshot="$work/page.png" "file://$page" 2> "$work/log" > /dev/null
chromium "${flags[@]}" --dump-dom "file://$page" 2> /dev/null > "$work/dom.html"

if grep -q 'CONSOLE' "$work/log"; then
  echo "check-html: the page logged to the console:" >&2
  grep 'CONSOLE' "$work/log" >&2
  exit 1
fi
size=$(stat -c %s "$work/page.png")
if [ "$size" -lt 20000 ]; then
  echo "check-html: the screenshot is only $size bytes" >&2
  exit 1
fi
charts=$(grep -o '<svg' "$work/dom.html" | wc -l)
rows=$(grep -o '<tr>' "$work/dom.html" | wc -l)
# 1 time distribution + 5 histograms + 1 timeline + 1 resources chart; 1 header row + 5
# metric rows (the Health table's rows are <tr class="finding">, counted apart).
if [ "$charts" -ne 8 ] || [ "$rows" -ne 6 ]; then
  echo "check-html: expected 8 charts and 6 table rows in the rendered DOM, found $charts and $rows" >&2
  exit 1
fi
grep -q '<h2>Health</h2>' "$work/dom.html" || { echo "check-html: no Health section" >&2; exit 1; }
echo "check-html: rendered cleanly ($size-byte screenshot, $charts charts, $rows table rows, a Health section)"

# The flamegraph (feature `flamegraph`): Chromium runs its script and draws a frame per
# stack of the whole run.
if "$bin" backtest --help | grep -q -- '--flamegraph'; then
  "$bin" backtest --strategy sma-crossover --flamegraph --out "$work/fg" > /dev/null
  chromium "${flags[@]}" --dump-dom "file://$work/fg/sma-crossover.flamegraph.svg" 2> /dev/null > "$work/fg.dom"
  frames=$(grep -o '<g>' "$work/fg.dom" | wc -l)
  for hook in tick getSignal getCandles backtest getAveragePrice; do
    if ! grep -q "<title>$hook " "$work/fg.dom"; then
      echo "check-html: the flamegraph shows no $hook frame" >&2
      exit 1
    fi
  done
  echo "check-html: flamegraph rendered with $frames frames, every hook among them"
fi
