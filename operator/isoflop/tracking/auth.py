"""The operator's MLflow credentials, sent to its installation's own tracking server only.

MLflow's client takes credentials from the process's environment (MLFLOW_TRACKING_TOKEN, ...) and
sends them to whatever server a client is made for: in the operator, a sweep's
`spec.tracking.mlflow.trackingUri` too, so a user could collect the operator's token with a
server of their own. The operator's credentials are therefore not in MLflow's variables but in
ISOFLOP_MLFLOW_TRACKING_TOKEN, or ISOFLOP_MLFLOW_TRACKING_USERNAME and _PASSWORD (the chart's
`tracking.mlflow.credentialsSecret`, mounted with the ISOFLOP_ prefix), and this request auth
provider (MLflow's `mlflow.request_auth_provider` entry point, chosen with
MLFLOW_TRACKING_AUTH=isoflop-installation) adds them to a request only when its URL is under the
installation's default server (ISOFLOP_MLFLOW_TRACKING_URI): same scheme, host, port and path
prefix. A request anywhere else goes without them. Redirects are not followed
(MLFLOW_ALLOW_HTTP_REDIRECTS=false), so no answer can send the header elsewhere.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping, MutableMapping
from typing import Any
from urllib.parse import urlsplit

NAME = "isoflop-installation"
DEFAULT_URI_ENV = "ISOFLOP_MLFLOW_TRACKING_URI"
PREFIX = "ISOFLOP_"
# what MLflow's client would read from the environment, and send to any server
MLFLOW_CREDENTIALS = (
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
)


def _origin_and_path(url: str) -> tuple[str, str, int | None, str]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or {"http": 80, "https": 443}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port, parts.path.rstrip("/")


def under(url: str, base: str) -> bool:
    """Whether `url` is on the server `base` names: same scheme, host and port, under its path."""
    scheme, host, port, path = _origin_and_path(url)
    b_scheme, b_host, b_port, b_path = _origin_and_path(base)
    if (scheme, host, port) != (b_scheme, b_host, b_port) or not host:
        return False
    return path == b_path or path.startswith(b_path + "/")


def authorization(url: str, env: Mapping[str, str] = os.environ) -> str | None:
    """The Authorization header for a request to `url`: the operator's token (Bearer) or user
    and password (Basic) when `url` is under the installation's server; else None."""
    base = env.get(DEFAULT_URI_ENV)
    if not base or not under(url, base):
        return None
    token = env.get(PREFIX + "MLFLOW_TRACKING_TOKEN")
    if token:
        return f"Bearer {token}"
    user = env.get(PREFIX + "MLFLOW_TRACKING_USERNAME")
    password = env.get(PREFIX + "MLFLOW_TRACKING_PASSWORD")
    if user and password:
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    return None


class InstallationAuth:
    """A `requests` auth (any callable that takes and returns the prepared request)."""

    def __call__(self, request: Any) -> Any:
        header = authorization(str(request.url))
        if header is not None:
            request.headers["Authorization"] = header
        return request


class InstallationAuthProvider:
    """MLflow's RequestAuthProvider interface (get_name, get_auth), found by its entry point."""

    def get_name(self) -> str:
        return NAME

    def get_auth(self) -> InstallationAuth:
        return InstallationAuth()


def operator_environment(env: MutableMapping[str, str] = os.environ) -> list[str]:
    """Set the operator process's MLflow client up: this provider, no redirects, no MLflow
    credentials of its own in the environment (they would go to any server: moved under the
    ISOFLOP_ prefix). Returns the variables moved."""
    env["MLFLOW_TRACKING_AUTH"] = NAME
    env["MLFLOW_ALLOW_HTTP_REDIRECTS"] = "false"
    moved = []
    for name in MLFLOW_CREDENTIALS:
        value = env.pop(name, None)
        if value is not None:
            env.setdefault(PREFIX + name, value)
            moved.append(name)
    return moved
