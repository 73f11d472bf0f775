"""Run in a network (and mount) namespace of its own by tests/operator/test_egress.py, as root:
it puts 169.254.169.254 and fd00:ec2::254 on the namespace's loopback with a "metadata service"
that counts what reaches it, a Prometheus and a server that redirects to the metadata service,
and a DNS name for it in a private /etc/hosts; then asks each URL twice, through the operator's
query (isoflop.cluster.results) and through plain urllib (which follows redirects and resolves
any spelling), and prints what reached the metadata service each time, as JSON.

    unshare --net --mount python -m tests.operator.egress_probe URL...
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socket import AF_INET6
from typing import Any

from isoflop import api
from isoflop.cluster import results

PROMETHEUS_PORT, REDIRECT_PORT = 9090, 9091
reached: list[str] = []


class Metadata(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        reached.append(self.path)
        self._answer(200, {"status": "success", "data": {"result": [{"value": [0, "0.5"]}]}})

    def _answer(self, code: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_: Any) -> None:
        pass


class Prometheus(Metadata):
    def do_GET(self) -> None:
        self._answer(200, {"status": "success", "data": {"result": [{"value": [0, "0.25"]}]}})


class Redirect(Metadata):
    def do_GET(self) -> None:
        self._answer(302, {}, {"Location": "http://169.254.169.254/latest/meta-data/"})


class Server6(ThreadingHTTPServer):
    address_family = AF_INET6


def serve(server: ThreadingHTTPServer) -> None:
    threading.Thread(target=server.serve_forever, daemon=True).start()


def main(urls: list[str]) -> None:
    for cmd in (
        ["ip", "link", "set", "lo", "up"],
        ["ip", "addr", "add", "169.254.169.254/32", "dev", "lo"],
        ["ip", "-6", "addr", "add", "fd00:ec2::254/128", "dev", "lo", "nodad"],
    ):
        subprocess.run(cmd, check=True)
    hosts = tempfile.NamedTemporaryFile("w", suffix=".hosts", delete=False)  # noqa: SIM115
    hosts.write("127.0.0.1 localhost\n169.254.169.254 metadata.test\n")
    hosts.close()
    subprocess.run(["mount", "--bind", hosts.name, "/etc/hosts"], check=True)
    serve(ThreadingHTTPServer(("169.254.169.254", 80), Metadata))
    serve(Server6(("fd00:ec2::254", 80), Metadata))
    serve(ThreadingHTTPServer(("127.0.0.1", PROMETHEUS_PORT), Prometheus))
    serve(ThreadingHTTPServer(("127.0.0.1", REDIRECT_PORT), Redirect))
    metrics = api.MetricsSpec(query_timeout_seconds=2)
    out = {}
    for url in urls:
        before = len(reached)
        loss = results.query_prometheus(url, metrics, "ns", "sweep", "trial")
        by_operator, before = len(reached) - before, len(reached)
        try:
            with urllib.request.urlopen(url + "/api/v1/query", timeout=2) as resp:
                resp.read()
        except OSError:
            pass
        out[url] = {"loss": loss, "operator": by_operator, "urllib": len(reached) - before}
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
