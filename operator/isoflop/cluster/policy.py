"""What an operator installation lets sweeps ask for: images, ServiceAccounts, Prometheus and
MLflow URLs.

A sweep becomes pods that run with the operator's rights to create them: without a policy, anyone
who may create a ScalingSweep may run any image as any ServiceAccount of the namespace, and have
the operator GET any URL as "Prometheus" or log to any URL as "MLflow" (a cloud metadata address
included). The chart sets the allowlists (`policy.*` values, environment variables here); a sweep
outside them is InvalidSpec, with a sentence, and nothing is created for it. Patterns are shell
globs (`fnmatch`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from urllib.parse import urlsplit

from isoflop import api
from isoflop.cluster import egress

ENV = {
    "images": "ISOFLOP_ALLOWED_IMAGES",
    "service_accounts": "ISOFLOP_ALLOWED_SERVICE_ACCOUNTS",
    "prometheus_urls": "ISOFLOP_ALLOWED_PROMETHEUS_URLS",
    "mlflow_uris": "ISOFLOP_ALLOWED_MLFLOW_URIS",
}


@dataclass(frozen=True)
class Policy:
    """Allowlists of glob patterns; None allows anything (the default for images and accounts)."""

    images: tuple[str, ...] | None = None
    service_accounts: tuple[str, ...] | None = None
    prometheus_urls: tuple[str, ...] | None = None
    mlflow_uris: tuple[str, ...] | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Policy:
        """Comma-separated patterns; unset means no restriction, empty means none allowed."""

        def patterns(name: str) -> tuple[str, ...] | None:
            raw = env.get(name)
            if raw is None:
                return None
            return tuple(p.strip() for p in raw.split(",") if p.strip())

        return cls(**{field: patterns(var) for field, var in ENV.items()})


def _allowed(value: str, patterns: tuple[str, ...] | None) -> bool:
    return patterns is None or any(fnmatchcase(value, p) for p in patterns)


def _link_local(url: str) -> bool:
    """A link-local or instance-metadata address written in the URL, in any spelling the C
    resolver reads as one (the connection itself is checked again: isoflop.cluster.egress)."""
    ip = egress.literal_address(urlsplit(url).hostname or "")
    return ip is not None and egress.forbidden(ip)


def check(spec: api.ScalingSweepSpec, policy: Policy) -> str | None:
    """The sentence refusing what the policy does not allow; None when the sweep is allowed."""
    res = spec.resources
    if not _allowed(res.image, policy.images):
        return (
            f"spec.resources.image {res.image!r} is not allowed by this installation "
            f"(allowed: {', '.join(policy.images or ()) or 'none'})"
        )
    account = res.service_account_name or "default"
    if not _allowed(account, policy.service_accounts):
        return (
            f"spec.resources.serviceAccountName {account!r} is not allowed by this installation "
            f"(allowed: {', '.join(policy.service_accounts or ()) or 'none'})"
        )
    mlflow = spec.tracking.mlflow
    for field, what, url, patterns in (
        (
            "spec.metrics.prometheusUrl",
            "Prometheus",
            spec.metrics.prometheus_url,
            policy.prometheus_urls,
        ),
        (
            "spec.tracking.mlflow.trackingUri",
            "an MLflow server",
            mlflow.tracking_uri if mlflow else None,
            policy.mlflow_uris,
        ),
    ):
        if url is None:
            continue
        if _link_local(url):
            return f"{field} {url!r} is a link-local or cloud metadata address, never {what}"
        if not _allowed(url, patterns):
            return (
                f"{field} {url!r} is not allowed by this installation "
                f"(allowed: {', '.join(patterns or ()) or 'none'})"
            )
    return None
