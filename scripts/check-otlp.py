#!/usr/bin/env python3
"""Reads an OTLP-JSON file (one ExportTraceServiceRequest per line) with the
OpenTelemetry protobuf definitions (PyPI's opentelemetry-proto), strictly: unknown or
mistyped fields fail. OTLP/JSON writes trace and span ids as hex; like an OTLP receiver,
this turns them into the bytes the protobuf mapping expects before parsing.

Usage: check-otlp.py FILE [HOOK ...]   (each HOOK must appear as a span name)
"""
import base64
import json
import sys

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


def hex_ids_to_base64(request):
    for resource in request.get("resourceSpans", []):
        for scope in resource.get("scopeSpans", []):
            for span in scope.get("spans", []):
                for field in ("traceId", "spanId", "parentSpanId"):
                    if span.get(field):
                        span[field] = base64.b64encode(bytes.fromhex(span[field])).decode()
    return request


def main():
    path, hooks = sys.argv[1], sys.argv[2:]
    names, spans = set(), 0
    with open(path) as lines:
        for number, line in enumerate(lines, 1):
            message = ExportTraceServiceRequest()
            try:
                json_format.Parse(json.dumps(hex_ids_to_base64(json.loads(line))), message)
            except Exception as error:  # noqa: BLE001 - any parse failure is the answer
                sys.exit(f"check-otlp: {path}:{number}: not an OTLP ExportTraceServiceRequest: {error}")
            for resource in message.resource_spans:
                for scope in resource.scope_spans:
                    for span in scope.spans:
                        if len(span.trace_id) != 16 or len(span.span_id) != 8:
                            sys.exit(f"check-otlp: {path}:{number}: span {span.name!r} has ids of the wrong length")
                        values = {a.key: a.value for a in span.attributes}
                        keys = set(values)
                        wanted = {"symbol", "strategy", "performance.duration_ms", "performance.slow"}
                        if values.get("performance.slow") and values["performance.slow"].bool_value:
                            wanted |= {"performance.threshold", "performance.slowness_ratio"}
                        if not wanted <= keys:
                            sys.exit(f"check-otlp: {path}:{number}: span {span.name!r} lacks {sorted(wanted - keys)}")
                        names.add(span.name)
                        spans += 1
    missing = [h for h in hooks if h not in names]
    if missing:
        sys.exit(f"check-otlp: no span named {missing} in {path}")
    print(f"check-otlp: {spans} spans read with the OTLP protobuf definitions ({', '.join(sorted(names))})")


if __name__ == "__main__":
    main()
