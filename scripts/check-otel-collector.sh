#!/usr/bin/env bash
# A run's spans through a real OpenTelemetry collector (rotel, from PyPI) on loopback:
# backtest-perf posts OTLP/HTTP protobuf to rotel, rotel exports OTLP/HTTP to a receiver
# that decodes it with the OTLP protobuf definitions. Checks that every span the run
# printed arrived, each with its parent in its own trace, one trace per tick.
#
# Usage: check-otel-collector.sh BINARY
set -euo pipefail
bin=$1
rotel=$(python3 -c 'import rotel, os; print(os.path.join(os.path.dirname(rotel.__file__), "rotel-agent"))')
work=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
receiver_port=$(free_port)
collector_port=$(free_port)
grpc_port=$(free_port)
python3 "$(dirname "$0")/otlp-receiver.py" "$receiver_port" &
receiver=$!
"$rotel" start --otlp-http-endpoint "127.0.0.1:$collector_port" --otlp-grpc-endpoint "127.0.0.1:$grpc_port" \
  --exporter otlp --otlp-exporter-endpoint "http://127.0.0.1:$receiver_port" --otlp-exporter-protocol http \
  --batch-timeout 100ms --pid-file "$work/rotel.pid" --log-file "$work/rotel.log" > "$work/rotel.out" 2>&1 &
collector=$!
trap 'kill $collector $receiver 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 50); do
  curl -s -o /dev/null "http://127.0.0.1:$receiver_port/summary" && \
    (echo > "/dev/tcp/127.0.0.1/$collector_port") 2>/dev/null && break
  sleep 0.2
done
"$bin" backtest --strategy sma-crossover --otlp-endpoint "http://127.0.0.1:$collector_port/v1/traces" \
  --out "$work" > "$work/run.out"
sent=$(sed -n 's/^spans: \([0-9]*\) in \([0-9]*\) traces.*/\1 \2/p' "$work/run.out")
read -r spans traces <<< "$sent"
[ -n "${spans:-}" ] || { echo "check-otel-collector: the run printed no span count"; cat "$work/run.out"; exit 1; }
summary=""
for _ in $(seq 100); do
  summary=$(curl -s "http://127.0.0.1:$receiver_port/summary")
  got=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["spans"])' "$summary")
  [ "$got" -ge "$spans" ] && break
  sleep 0.2
done
python3 - "$summary" "$spans" "$traces" <<'PY'
import json, sys
summary, spans, traces = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
problems = []
if summary["errors"]:
    problems.append(f"undecodable requests: {summary['errors']}")
if summary["spans"] != spans:
    problems.append(f"{summary['spans']} spans arrived, the run sent {spans}")
if summary["traces"] != traces:
    problems.append(f"{summary['traces']} traces arrived, the run sent {traces}")
if summary["withoutParent"]:
    problems.append(f"{summary['withoutParent']} spans arrived without their parent")
for hook in ["tick", "getSignal", "getCandles", "getAveragePrice", "backtest"]:
    if hook not in summary["names"]:
        problems.append(f"no {hook} span arrived")
if problems:
    sys.exit("check-otel-collector: " + "; ".join(problems))
print(f"check-otel-collector: rotel passed on all {spans} spans in {traces} traces, every parent present")
PY
