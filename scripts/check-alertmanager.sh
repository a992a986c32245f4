#!/usr/bin/env bash
# A real Prometheus Alertmanager (Debian's prometheus-alertmanager) on loopback receives
# the alerts a backtest fires with --alert-webhook alertmanager=URL. Waits are bounded.
# Usage: scripts/check-alertmanager.sh [BINARY]
set -euo pipefail
bin=${1:-target/debug/backtest-perf}
work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2> /dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cluster=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$work/alertmanager.yml" <<YAML
route:
  receiver: nowhere
receivers:
  - name: nowhere
YAML
prometheus-alertmanager --config.file="$work/alertmanager.yml" --storage.path="$work/data" \
  --web.listen-address="127.0.0.1:$port" --cluster.listen-address="127.0.0.1:$cluster" \
  > "$work/alertmanager.log" 2>&1 &
pid=$!
for _ in $(seq 1 300); do
  curl -sf "http://127.0.0.1:$port/-/ready" -o /dev/null && break
  sleep 0.1
done
cat > "$work/rules.json" <<'JSON'
[{"name": "full storage", "severity": "warning", "condition": {"kind": "droppedAbove", "bound": 0}}]
JSON
"$bin" backtest --strategy sma-crossover --alerts "$work/rules.json" \
  --alert-webhook "alertmanager=http://127.0.0.1:$port" --out "$work/out" > /dev/null 2> "$work/backtest.err"
curl -sf "http://127.0.0.1:$port/api/v2/alerts" -o "$work/alerts.json"
python3 - "$work/alerts.json" <<'PY'
import json, sys
alerts = json.load(open(sys.argv[1]))
ours = [a for a in alerts if a["labels"].get("alertname") == "full storage"
        and a["labels"].get("symbol") == "EURUSD" and a["labels"].get("strategy") == "sma-crossover"]
if not ours:
    sys.exit(f"check-alertmanager: the Alertmanager holds no 'full storage' alert for EURUSD:sma-crossover: {alerts}")
print("check-alertmanager: the Alertmanager received the run's alert:", ours[0]["annotations"]["summary"])
PY
