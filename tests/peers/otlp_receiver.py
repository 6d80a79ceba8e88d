#!/usr/bin/env python3
"""Independent OTLP logs receiver for kollate's integration tests.

Decodes requests with the official opentelemetry-proto classes and serves
  gRPC  opentelemetry.proto.collector.logs.v1.LogsService/Export   on 127.0.0.1:--grpc-port
  HTTP  POST /v1/logs (application/x-protobuf, optional gzip)        on 127.0.0.1:--http-port
(port 0 disables that transport). gzip-compressed gRPC requests are accepted as well.

--out FILE          one JSON line per log record:
                    {"transport": "grpc"|"http", "resource": {attr: value}, "scope": name,
                     "time_unix_nano": int, "observed_time_unix_nano": int,
                     "severity_number": int, "severity_text": str, "body": value,
                     "attributes": {key: value},
                     "event_name": str, "trace_id": hex, "span_id": hex}
                    (AnyValue -> plain JSON: string/int/double/bool/array/kvlist; bytes as base64;
                    an unset value is null), written and flushed once per request.
--headers-out FILE  one JSON line per request, refused ones included:
                    {"transport": .., "path": .., "refused": bool, "records": int,
                     "headers": {lower-case name: value}}
--stats-file FILE   rewritten (atomically) after every request:
                    {"accepted_requests": n, "refused_requests": n, "records": n}
--unavailable-for S refuse every request for S seconds after start (gRPC UNAVAILABLE, HTTP 503),
                    recording nothing but the refusal count (stats file, headers-out, and a
                    summary line on stderr at exit).
--ready-file FILE   gets "ready\\n" once every enabled server listens.

Prints nothing on stdout; errors go to stderr. SIGTERM/SIGINT stop it cleanly (exit 0).
"""

import argparse
import base64
import gzip
import json
import os
import signal
import sys
import threading
import time
import zlib
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc


def err(msg):
    print(f"otlp_receiver: {msg}", file=sys.stderr, flush=True)


def any_value(v):
    """opentelemetry.proto.common.v1.AnyValue -> plain JSON value."""
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "string_value":
        return v.string_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "int_value":
        return v.int_value
    if kind == "double_value":
        return v.double_value
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return kv_list(v.kvlist_value.values)
    if kind == "bytes_value":
        return base64.b64encode(v.bytes_value).decode("ascii")
    return None


def kv_list(kvs):
    return {kv.key: any_value(kv.value) for kv in kvs}


def records_of(request, transport):
    out = []
    for rl in request.resource_logs:
        resource = kv_list(rl.resource.attributes)
        for sl in rl.scope_logs:
            scope = sl.scope.name
            for r in sl.log_records:
                out.append({
                    "transport": transport,
                    "resource": resource,
                    "scope": scope,
                    "time_unix_nano": r.time_unix_nano,
                    "observed_time_unix_nano": r.observed_time_unix_nano,
                    "severity_number": int(r.severity_number),
                    "severity_text": r.severity_text,
                    "body": any_value(r.body),
                    "attributes": kv_list(r.attributes),
                    "event_name": r.event_name,
                    "trace_id": r.trace_id.hex(),
                    "span_id": r.span_id.hex(),
                })
    return out


class Sink:
    """Everything the two servers share; one lock so lines never interleave."""

    def __init__(self, args):
        self.lock = threading.Lock()
        self.refuse_until = time.monotonic() + args.unavailable_for
        self.out = open(args.out, "a", encoding="utf-8") if args.out else None
        self.headers_out = open(args.headers_out, "a", encoding="utf-8") if args.headers_out else None
        self.stats_file = args.stats_file
        self.accepted = 0
        self.refused = 0
        self.records = 0
        if self.stats_file:
            self._write_stats()

    def refusing(self):
        return time.monotonic() < self.refuse_until

    def _write_stats(self):
        tmp = f"{self.stats_file}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"accepted_requests": self.accepted, "refused_requests": self.refused,
                       "records": self.records}, f)
            f.write("\n")
        os.replace(tmp, self.stats_file)

    def _header_line(self, transport, path, refused, n, headers):
        if self.headers_out:
            self.headers_out.write(json.dumps({
                "transport": transport, "path": path, "refused": refused, "records": n,
                "headers": headers}, ensure_ascii=False) + "\n")
            self.headers_out.flush()

    def refuse(self, transport, path, headers):
        with self.lock:
            self.refused += 1
            self._header_line(transport, path, True, 0, headers)
            if self.stats_file:
                self._write_stats()

    def accept(self, transport, path, headers, request):
        if self.out:
            recs = records_of(request, transport)
            n = len(recs)
        else:  # counting only (benchmarks): decoded, not converted
            n = sum(len(sl.log_records) for rl in request.resource_logs for sl in rl.scope_logs)
        with self.lock:
            if self.out:
                self.out.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs))
                self.out.flush()
            self.accepted += 1
            self.records += n
            self._header_line(transport, path, False, n, headers)
            if self.stats_file:
                self._write_stats()

    def close(self):
        with self.lock:
            for f in (self.out, self.headers_out):
                if f:
                    f.close()


def metadata_dict(md):
    out = {}
    for k, v in md or ():
        if isinstance(v, bytes):
            v = base64.b64encode(v).decode("ascii")
        out[k.lower()] = v
    return out


class LogsService(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, sink):
        self.sink = sink

    def Export(self, request, context):  # noqa: N802 - generated name
        path = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
        headers = metadata_dict(context.invocation_metadata())
        if self.sink.refusing():
            self.sink.refuse("grpc", path, headers)
            context.abort(grpc.StatusCode.UNAVAILABLE, "otlp_receiver: unavailable (test)")
        self.sink.accept("grpc", path, headers, request)
        return logs_service_pb2.ExportLogsServiceResponse()


class HttpHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kollate-otlp-receiver"
    sink = None  # set on the subclass

    def log_message(self, format, *args):  # noqa: A002 - quiet on success
        pass

    def _reply(self, code, body=b"", ctype="application/x-protobuf", extra=None):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(parts)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_POST(self):  # noqa: N802 - http.server API
        body = self._body()
        path = self.path.split("?", 1)[0]
        if path != "/v1/logs":
            self._reply(404, b"not found\n", "text/plain")
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype not in ("application/x-protobuf", "application/protobuf"):
            self._reply(415, f"unsupported Content-Type {ctype!r}\n".encode(), "text/plain")
            return
        if self.sink.refusing():
            self.sink.refuse("http", path, headers)
            # The body of a failure is a google.rpc.Status; an empty one is valid protobuf.
            self._reply(503)
            return
        enc = self.headers.get("Content-Encoding", "").strip().lower()
        try:
            if enc == "gzip":
                body = gzip.decompress(body)
            elif enc == "deflate":
                body = zlib.decompress(body)
            elif enc not in ("", "identity"):
                self._reply(415, f"unsupported Content-Encoding {enc!r}\n".encode(), "text/plain")
                return
            request = logs_service_pb2.ExportLogsServiceRequest.FromString(body)
        except (OSError, EOFError, zlib.error, DecodeError) as e:
            err(f"bad HTTP request body ({enc or 'identity'}, {len(body)} bytes): {e}")
            self._reply(400)
            return
        self.sink.accept("http", path, headers, request)
        self._reply(200, logs_service_pb2.ExportLogsServiceResponse().SerializeToString())

    def do_GET(self):  # noqa: N802
        self._reply(405, b"use POST /v1/logs\n", "text/plain", {"Allow": "POST"})

    do_PUT = do_GET  # noqa: N815


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--grpc-port", type=int, required=True, help="0 disables gRPC")
    ap.add_argument("--http-port", type=int, required=True, help="0 disables HTTP")
    ap.add_argument("--out", help="append one JSON line per log record")
    ap.add_argument("--headers-out", help="append one JSON line of headers/metadata per request")
    ap.add_argument("--stats-file", help="request/record counts, rewritten after every request")
    ap.add_argument("--unavailable-for", type=float, default=0.0,
                    help="refuse everything for this many seconds after start")
    ap.add_argument("--ready-file", help='written with "ready\\n" once listening')
    args = ap.parse_args()
    if args.grpc_port == 0 and args.http_port == 0:
        ap.error("both transports disabled")

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    sink = Sink(args)
    grpc_server = None
    httpd = None
    http_thread = None
    try:
        if args.grpc_port:
            grpc_server = grpc.server(
                futures.ThreadPoolExecutor(max_workers=8),
                options=[("grpc.max_receive_message_length", 256 * 1024 * 1024),
                         ("grpc.so_reuseport", 0)])
            logs_service_pb2_grpc.add_LogsServiceServicer_to_server(LogsService(sink), grpc_server)
            try:
                bound = grpc_server.add_insecure_port(f"127.0.0.1:{args.grpc_port}")
            except RuntimeError as e:
                bound = 0
                err(str(e))
            if bound != args.grpc_port:
                err(f"cannot listen for gRPC on 127.0.0.1:{args.grpc_port}")
                return 1
            grpc_server.start()
        if args.http_port:
            handler = type("Handler", (HttpHandler,), {"sink": sink})
            try:
                httpd = ThreadingHTTPServer(("127.0.0.1", args.http_port), handler)
            except OSError as e:
                err(f"cannot listen for HTTP on 127.0.0.1:{args.http_port}: {e}")
                return 1
            httpd.daemon_threads = True
            http_thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                           daemon=True)
            http_thread.start()
        if args.ready_file:
            tmp = f"{args.ready_file}.tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                f.write("ready\n")
            os.replace(tmp, args.ready_file)

        while not stop.wait(0.5):
            pass
    finally:
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if grpc_server is not None:
            grpc_server.stop(grace=1).wait()
        sink.close()
        if args.unavailable_for:
            err(f"refused {sink.refused} request(s), accepted {sink.accepted}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
