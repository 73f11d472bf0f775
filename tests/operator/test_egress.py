"""The operator never asks a cloud's metadata service for "Prometheus", whatever the spelling of
its address: the admission policy refuses the spellings it can read, and every connection is
checked on the address it actually uses, after resolution, with no redirect followed. The
network test puts a metadata service of its own at 169.254.169.254 in a namespace of its own
(tests/operator/egress_probe.py) and shows plain urllib reaching it through every spelling."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from isoflop import api
from isoflop.cluster import egress, policy
from tests.corpus import base_manifest

ROOT = Path(__file__).resolve().parents[2]
SPELLINGS = [
    "169.254.169.254",
    "2852039166",  # decimal
    "0xa9fea9fe",  # hex
    "0251.0376.0251.0376",  # octal dotted quad
    "0xa9.0xfe.0xa9.0xfe",  # hex dotted quad
    "169.254.43518",  # a.b.c
    "169.16689662",  # a.b
    "[::ffff:169.254.169.254]",  # IPv4-mapped IPv6
    "[::ffff:a9fe:a9fe]",
    "[fd00:ec2::254]",  # AWS's IPv6 metadata address
]


@pytest.mark.parametrize("host", [*SPELLINGS, "[::a9fe:a9fe]", "[64:ff9b::a9fe:a9fe]", "[fe80::1]"])
def test_every_spelling_of_the_metadata_address_is_refused_at_admission(host: str) -> None:
    manifest = base_manifest()
    manifest["spec"]["metrics"] = {"prometheusUrl": f"http://{host}:9090"}
    spec = api.parse_sweep(manifest).spec
    said = policy.check(spec, policy.Policy())
    assert said == (
        f"spec.metrics.prometheusUrl 'http://{host}:9090' is a link-local or cloud metadata "
        "address, never Prometheus"
    )


def test_addresses_that_are_not_metadata_pass() -> None:
    for host in ("127.0.0.1", "10.0.0.5", "::1", "prometheus.monitoring.svc", "169.255.0.1"):
        ip = egress.literal_address(host)
        assert ip is None or not egress.forbidden(ip), host
    assert egress.literal_address("2852039166") == ipaddress.ip_address("169.254.169.254")
    assert egress.literal_address("prometheus") is None  # a name: resolved at connection


@pytest.mark.skipif(os.geteuid() != 0, reason="a network namespace needs root")
def test_no_spelling_no_name_and_no_redirect_reaches_the_metadata_service() -> None:
    urls = [f"http://{h}" for h in SPELLINGS] + [
        "http://metadata.test",  # a DNS name that resolves there
        "http://127.0.0.1:9091",  # a server that redirects there
        "http://127.0.0.1:9090",  # Prometheus itself
    ]
    out = subprocess.run(
        ["unshare", "--net", "--mount", sys.executable, "-m", "tests.operator.egress_probe", *urls],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=os.environ,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    for url in urls[:-1]:
        # the probe has teeth: plain urllib gets there through this spelling (or redirect)
        assert got[url]["urllib"] == 1, (url, got[url])
        assert got[url]["operator"] == 0, (url, got[url])
        assert got[url]["loss"] is None, (url, got[url])
    assert got[urls[-1]] == {"loss": 0.25, "operator": 0, "urllib": 0}
