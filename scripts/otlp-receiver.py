#!/usr/bin/env python3
"""A minimal OTLP/HTTP trace receiver for CI: decodes every POST /v1/traces body with
the OpenTelemetry protobuf definitions (PyPI's opentelemetry-proto), strictly, and keeps
the spans. GET /summary answers JSON: how many spans arrived, how many distinct traces,
how many spans name a parent that is not in their own trace, and the span names.

Usage: otlp-receiver.py PORT
"""
import gzip
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

lock = threading.Lock()
spans = {}  # (trace_id, span_id) -> (parent_span_id, name)
errors = []


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        request = ExportTraceServiceRequest()
        try:
            if self.path != "/v1/traces":
                raise ValueError(f"unexpected path {self.path}")
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            request.ParseFromString(body)
        except Exception as error:  # noqa: BLE001 - any failure is the answer
            with lock:
                errors.append(str(error))
            self.send_response(400)
            self.end_headers()
            return
        with lock:
            for resource in request.resource_spans:
                for scope in resource.scope_spans:
                    for span in scope.spans:
                        spans[(span.trace_id, span.span_id)] = (span.parent_span_id, span.name)
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def do_GET(self):
        with lock:
            orphans = sum(
                1 for (trace, _), (parent, _) in spans.items() if parent and (trace, parent) not in spans
            )
            summary = {
                "spans": len(spans),
                "traces": len({trace for trace, _ in spans}),
                "withoutParent": orphans,
                "names": sorted({name for _, name in spans.values()}),
                "errors": errors[:5],
            }
        body = json.dumps(summary).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
