#!/usr/bin/env bash
# Checks the Prometheus output against the real tools (Debian's `prometheus` package):
# `promtool check metrics` on a textfile and on a scrape of a finished run kept up with
# --serve-after, and a real Prometheus server on loopback scraping that run and answering
# a query about it. Every wait is bounded.
# Usage: scripts/check-prometheus.sh [BINARY]
set -euo pipefail
bin=${1:-target/debug/backtest-perf}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2> /dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

# A free loopback port.
version=$("$bin" --version | awk '{print $2}')
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

"$bin" backtest --strategy sma-crossover --metrics-textfile --out "$work/textfile" > /dev/null
promtool check metrics < "$work/textfile/backtest-perf.prom"
echo "check-prometheus: promtool accepts the textfile"

metrics_port=$(port)
"$bin" backtest --strategy sma-crossover --metrics-addr "127.0.0.1:$metrics_port" --serve-after \
  --service-name bt --environment ci --out "$work/served" > "$work/served.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 300); do
  grep -q 'still serving' "$work/served.log" && break
  sleep 0.1
done
curl -sf "http://127.0.0.1:$metrics_port/metrics" -o "$work/scrape.prom"
promtool check metrics < "$work/scrape.prom"
echo "check-prometheus: promtool accepts a scrape of the finished run"

prometheus_port=$(port)
cat > "$work/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: backtest-perf
    static_configs:
      - targets: ["127.0.0.1:$metrics_port"]
YAML
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address="127.0.0.1:$prometheus_port" > "$work/prometheus.log" 2>&1 &
pids+=($!)
query='backtest_perf_operation_duration_seconds_count{metric_type="tick",strategy="sma-crossover",service="bt",environment="ci"}'
for _ in $(seq 1 300); do
  if curl -sf "http://127.0.0.1:$prometheus_port/api/v1/query" --data-urlencode "query=$query" \
      -o "$work/answer.json" && grep -q '"value":\[' "$work/answer.json"; then
    break
  fi
  sleep 0.1
done
ticks=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["data"]["result"]; print(r[0]["value"][1] if r else "none")' "$work/answer.json")
if [ "$ticks" != "4534" ]; then
  echo "check-prometheus: Prometheus answered $ticks ticks for the run, expected 4534" >&2
  tail -5 "$work/prometheus.log" >&2
  exit 1
fi
echo "check-prometheus: a Prometheus server scraped the run and counts its 4534 ticks"
# Every query of the Grafana dashboard returns data from that server.
python3 "$(dirname "$0")/check-dashboard.py" "$(dirname "$0")/../dashboards/backtest-perf.json" \
  "http://127.0.0.1:$prometheus_port"

# A real Pushgateway receives a run pushed with --metrics-push.
gateway_port=$(port)
prometheus-pushgateway --web.listen-address="127.0.0.1:$gateway_port" > "$work/pushgateway.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 300); do
  curl -sf "http://127.0.0.1:$gateway_port/metrics" -o /dev/null && break
  sleep 0.1
done
"$bin" backtest --strategy sma-crossover --metrics-push "http://127.0.0.1:$gateway_port" --service-name bt --out "$work/pushed" > /dev/null
curl -sf "http://127.0.0.1:$gateway_port/metrics" -o "$work/gateway.prom"
if ! grep -q 'backtest_perf_operation_duration_seconds_count{instance="",job="backtest-perf",metric_type="tick",service="bt",strategy="sma-crossover",symbol="EURUSD",version="'"$version"'"} 4534' "$work/gateway.prom"; then
  echo "check-prometheus: the Pushgateway does not hold the pushed run's 4534 ticks" >&2
  exit 1
fi
echo "check-prometheus: a Pushgateway received the pushed run (4534 ticks)"
