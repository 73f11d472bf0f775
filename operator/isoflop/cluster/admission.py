"""Admission: a sweep may run only what the user who sends it could run themselves.

The operator creates a sweep's Jobs with its own rights. Without this check, anyone who may create
a ScalingSweep could run pods as any ServiceAccount of the namespace and hand them any Secret. The
validating webhook (`isoflop.cluster.handlers`, registered by the chart) asks the API server, with
one SubjectAccessReview per question, whether the requesting user may:

- create Jobs (`create` on `jobs.batch`) in the sweep's namespace: every sweep;
- use its ServiceAccount (`use` or `impersonate` on that `serviceaccounts` name): when the spec
  names one (unnamed, pods run as the namespace's `default`, which creating Jobs already allows);
- read its S3 and MLflow credentials (`get` on those `secrets` names): when the spec names them.

`use` is a verb no built-in role grants: a Role with `verbs: [use]` on one ServiceAccount lets a
team run sweeps as it without being able to act as it through the API; the built-in `edit` and
`admin` roles grant `impersonate`, so namespace editors need nothing more.

Only a change to `spec` is checked on UPDATE: metadata and status changes (kopf's annotations, the
operator's own patches) cannot make a sweep run anything new. The decision is pure: `refusal` takes
the authorizer as a function, tested without a cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from isoflop import api

# kopf serves each admission handler at /<handler id>; the chart's webhook path must be this one.
WEBHOOK_ID = "scalingsweeps.isoflop.dev"


@dataclass(frozen=True)
class Access:
    """One question to the authorizer: may the user `verb` this resource in the namespace?"""

    verb: str
    group: str
    resource: str
    name: str | None = None


@dataclass(frozen=True)
class Need:
    """What the sweep needs its creator to be allowed, as any one of several accesses."""

    what: str
    any_of: tuple[Access, ...]


def needs(spec: api.ScalingSweepSpec) -> list[Need]:
    res = spec.resources
    out = [Need("create Jobs", (Access("create", "batch", "jobs"),))]
    if res.service_account_name:
        name = res.service_account_name
        out.append(
            Need(
                f"use the ServiceAccount {name!r} (spec.resources.serviceAccountName)",
                (
                    Access("use", "", "serviceaccounts", name),
                    Access("impersonate", "", "serviceaccounts", name),
                ),
            )
        )
    mlflow = spec.tracking.mlflow
    for field, secret in (
        ("spec.resources.s3CredentialsSecret", res.s3_credentials_secret),
        ("spec.tracking.mlflow.credentialsSecret", mlflow.credentials_secret if mlflow else None),
    ):
        if secret:
            out.append(
                Need(
                    f"get the Secret {secret!r} ({field})", (Access("get", "", "secrets", secret),)
                )
            )
    return out


def refusal(
    user: str,
    namespace: str,
    spec: api.ScalingSweepSpec,
    allowed: Callable[[Access], bool],
) -> str | None:
    """The sentence refusing a sweep whose creator lacks a right it needs; None when they have
    them all. Asks the authorizer only what the sweep needs, and stops at the first access that
    satisfies each need."""
    missing = [n.what for n in needs(spec) if not any(allowed(a) for a in n.any_of)]
    if not missing:
        return None
    listed = missing[0] if len(missing) == 1 else ", ".join(missing[:-1]) + " or " + missing[-1]
    return (
        f"{user} may not {listed} in namespace {namespace!r}; a sweep runs only what its "
        "creator could run"
    )


def spec_changed(
    operation: str | None, old: Mapping[str, Any] | None, new: Mapping[str, Any]
) -> bool:
    """Whether a request sets a spec: every CREATE, and an UPDATE whose spec differs from the
    stored one."""
    if operation != "UPDATE" or old is None:
        return True
    return bool(old.get("spec") != new.get("spec"))


def metadata_changed(
    operation: str | None, old: Mapping[str, Any] | None, new: Mapping[str, Any]
) -> bool:
    """Whether a request sets the user's metadata: every CREATE, and an UPDATE that changes
    anything of metadata but kopf's and kubectl's own annotations (kopf's patches of its
    bookkeeping pass as they are)."""
    if operation != "UPDATE" or old is None:
        return True

    def users(obj: Mapping[str, Any]) -> Any:
        meta = dict(obj.get("metadata") or {})
        meta["annotations"] = {
            k: v
            for k, v in (meta.get("annotations") or {}).items()
            if not k.startswith(api.OWN_ANNOTATION_PREFIXES)
        }
        return {k: meta.get(k) for k in ("labels", "annotations", "finalizers", "ownerReferences")}

    return bool(users(old) != users(new))
