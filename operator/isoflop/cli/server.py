"""`isoflop validate --server`: what the API server of the user's kubeconfig says of a sweep and
of the children the operator will make of it, each sent with dryRun=All (nothing is created).
The same dry run as the webhook's and the operator's (isoflop.cluster.dryrun), with the user's
own rights: a child they may not create is said so, not taken for a verdict."""

from __future__ import annotations

from typing import Any

from isoflop import api
from isoflop.sweep.plan import Plan


def server_check(obj: dict[str, Any], sweep: api.ScalingSweep, plan: Plan, args: Any) -> str:
    """The line saying what the server took; ValueError with its sentence when it refuses."""
    import kubernetes  # only here: validate works with no cluster in reach
    import urllib3  # type: ignore[import-untyped]
    from kubernetes.client.rest import ApiException

    from isoflop.cluster import dryrun
    from isoflop.cluster.clients import Clients, server_message

    try:
        kubernetes.config.load_kube_config(context=args.context)
        _, active = kubernetes.config.list_kube_config_contexts()
    except (kubernetes.config.ConfigException, OSError) as err:
        raise ValueError(
            f"--server needs a kubeconfig that reaches the API server: {err}"
        ) from None
    namespace = (
        args.namespace
        or sweep.metadata.namespace
        or (active or {}).get("context", {}).get("namespace")
        or "default"
    )
    client = kubernetes.client.ApiClient()
    body = {**obj, "metadata": {**obj["metadata"], "namespace": namespace}}
    note = ""
    clients = Clients(
        batch=kubernetes.client.BatchV1Api(client), core=kubernetes.client.CoreV1Api(client)
    )
    try:
        try:
            kubernetes.client.CustomObjectsApi(client).create_namespaced_custom_object(
                api.GROUP, api.VERSION, namespace, api.PLURAL, body, dry_run=dryrun.DRY_RUN
            )
        except ApiException as err:
            if err.status != 409:
                raise ValueError(
                    f"the API server refuses the sweep: {server_message(err)}"
                ) from None
            note = f" (a sweep named {sweep.name!r} exists there already)"
        refused = dryrun.refusal(sweep, plan, namespace, clients)
    except (urllib3.exceptions.HTTPError, OSError) as err:
        host = client.configuration.host
        raise ValueError(f"--server: cannot reach the API server at {host}: {err}") from None
    if refused is not None:
        raise ValueError(refused)
    return f"the API server at {client.configuration.host} takes it in namespace {namespace}{note}"
