"""A stand-in OTLP/HTTP collector for `ours_traced`: answers every export, decodes nothing.

Runs as its own process (`python -m bench.variants.otlp_sink`), so its work is not counted as the
consumer's CPU; prints its port on the first line.
"""

from __future__ import annotations

import subprocess
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a collector: no connection per export

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")  # an empty ExportTraceServiceResponse
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def start() -> tuple[subprocess.Popen[str], str]:
    """The sink as a child process, and its endpoint (OTEL_EXPORTER_OTLP_ENDPOINT)."""
    process = subprocess.Popen([sys.executable, "-m", "bench.variants.otlp_sink"], stdout=subprocess.PIPE,
                               text=True)
    assert process.stdout is not None
    port = int(process.stdout.readline())
    return process, f"http://127.0.0.1:{port}"


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    print(server.server_address[1], flush=True)
    server.serve_forever()
