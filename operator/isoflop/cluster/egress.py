"""Where the operator's own HTTP requests may go: never a cloud's instance-metadata address,
however the URL spells it, and never where a redirect points.

A sweep names its Prometheus (`spec.metrics.prometheusUrl`), and the operator GETs it with its
own network position. The metadata service (169.254.169.254, fd00:ec2::254) hands out the node's
cloud credentials, and a URL reaches it under many spellings: 2852039166, 0xa9fea9fe,
0251.0376.0251.0376, 169.254.43518, [::ffff:169.254.169.254], a DNS name that resolves there, or
a redirect from a server the user controls. So the check is made on the address each connection
actually uses, after resolution (`open_checked`), and redirects are not followed (`get_json`).
`literal_address` reads an address as the C resolver does, without asking DNS, for admission's
early refusal (isoflop.cluster.policy).
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import socket
import ssl
from typing import Any
from urllib.parse import urlsplit

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# Instance-metadata addresses outside link-local space: AWS's IPv6 endpoint, Alibaba's
METADATA = (ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("100.100.100.200"))
NAT64 = ipaddress.ip_network("64:ff9b::/96")  # the well-known prefix: an IPv4 address inside


class Refused(OSError):
    """A connection the operator will not make (the sentence says why)."""


def embedded_ipv4(ip: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries to the same host: mapped (::ffff:a.b.c.d),
    compatible (::a.b.c.d) or NAT64 (64:ff9b::a.b.c.d)."""
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    packed = int(ip)
    if (packed >> 32 == 0 and packed > 1) or ip in NAT64:  # not :: nor ::1
        return ipaddress.IPv4Address(packed & 0xFFFFFFFF)
    return None


def forbidden(ip: Address) -> bool:
    """Whether an address is (or carries) a link-local or instance-metadata one."""
    for candidate in (ip, embedded_ipv4(ip)):
        if candidate is not None and (candidate.is_link_local or candidate in METADATA):
            return True
    return False


def literal_address(host: str) -> Address | None:
    """The address a host written as a number means to the C resolver (inet_aton's forms:
    decimal, hex, octal, a.b.c and a.b shorthand; IPv6 with a zone); None for a name."""
    host = host.strip("[]").split("%", 1)[0]
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, ValueError):
        return None


def checked_addresses(host: str, port: int) -> list[Any]:
    """getaddrinfo's answers for `host`, Refused if any is forbidden."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    for *_, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if forbidden(ip):
            raise Refused(f"{host} is {ip}, a link-local or cloud metadata address")
    return infos


def open_checked(host: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection to `host`, refused before any packet if any address it resolves to is
    forbidden (so no spelling and no DNS answer reaches the metadata service)."""
    infos = checked_addresses(host, port)
    error: OSError | None = None
    for family, kind, proto, _, sockaddr in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(sockaddr)
            return sock
        except OSError as err:
            sock.close()
            error = err
    raise error or OSError(f"{host} resolves to no address")


class _Http(http.client.HTTPConnection):
    def connect(self) -> None:
        self.sock = open_checked(self.host, self.port, self.timeout or 10.0)


class _Https(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int | None, timeout: float) -> None:
        self.tls = ssl.create_default_context()
        super().__init__(host, port, timeout=timeout, context=self.tls)

    def connect(self) -> None:
        raw = open_checked(self.host, self.port, self.timeout or 10.0)
        self.sock = self.tls.wrap_socket(raw, server_hostname=self.host)


def get_json(url: str, timeout: float) -> Any:
    """GET `url` and decode its JSON body; OSError when it cannot be reached, is refused
    (Refused), or answers anything but 200 (a redirect included: it is not followed)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise OSError(f"not an http(s) URL: {url!r}")
    kind = _Https if parts.scheme == "https" else _Http
    conn = kind(parts.hostname, parts.port, timeout=timeout)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request("GET", target, headers={"Accept": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            raise OSError(f"{url} answered {resp.status} {resp.reason} (redirects not followed)")
        return json.loads(resp.read())
    finally:
        conn.close()
