"""The Helm chart with the real helm binary: lint and render a matrix of values, validate every
rendered object (kubernetes-validate --strict for 1.27 and 1.33; the prometheus-operator kinds
against its models, kopf's against its CRD), and check what each setting should produce."""

from __future__ import annotations

import json
import subprocess
import types
import typing
from typing import Any

import cloudcoil.models.prometheus_operator.v1 as monitoring
import jsonschema
import kubernetes_validate
import pydantic
import pytest
import yaml

from isoflop import api
from isoflop.cluster import manifests
from isoflop.sweep.plan import plan
from isoflop.sweep.trials import train_config
from tests.monitoring.conftest import CHART, DASHBOARD, ROOT, RULES
from tests.unit.test_crd import to_json_schema

NAMESPACE = "isoflop-system"
MONITORS = [
    "serviceMonitor.enabled=true",
    "podMonitor.enabled=true",
    "prometheusRule.enabled=true",
    "operator.prometheusUrl=http://prometheus-operated.monitoring:9090",
]
CASES: dict[str, list[str]] = {
    "defaults": [],
    "namespaced": ["watch.namespaces={ml,research}"],
    "monitors": MONITORS,
    "ha": ["replicas=3"],
    "ha-namespaced-monitors": ["replicas=2", "watch.namespaces={ml}", *MONITORS],
}
VERSIONS = ("1.27", "1.33")


def render(helm: str, sets: list[str], version: str = "1.33") -> list[dict[str, Any]]:
    args = [helm, "template", "isoflop", str(CHART), "--namespace", NAMESPACE, "--include-crds"]
    args += ["--kube-version", f"{version}.0"]
    for s in sets:
        args += ["--set", s]
    out = subprocess.run(args, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def by_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(objs, kind)
    assert len(found) == 1, f"{len(found)} {kind} objects"
    return found[0]


# ------------------------------------------------------------------------------------------------
# validation of every rendered object


def crd_validators() -> dict[tuple[str, str], jsonschema.Draft4Validator]:
    out = {}
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            for version in crd["spec"]["versions"]:
                schema = to_json_schema(version["schema"]["openAPIV3Schema"])
                props = schema.setdefault("properties", {})
                props.update(apiVersion={"type": "string"}, kind={"type": "string"}, metadata={})
                schema["additionalProperties"] = False
                key = (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
                out[key] = jsonschema.Draft4Validator(schema)
    return out


def unknown_fields(model: type[pydantic.BaseModel], data: Any, path: str) -> list[str]:
    """Keys the model does not define, recursively: pydantic ignores them, `--strict` must not."""
    if not isinstance(data, dict):
        return []
    fields = {f.alias or name: f for name, f in model.model_fields.items()}
    problems = []
    for key, value in data.items():
        if key not in fields:
            problems.append(f"{path}.{key}")
            continue
        for inner in nested_models(fields[key].annotation):
            items = value if isinstance(value, list) else [value]
            for i, item in enumerate(items):
                where = f"{path}.{key}[{i}]" if isinstance(value, list) else f"{path}.{key}"
                problems += unknown_fields(inner, item, where)
    return problems


def nested_models(annotation: Any) -> list[type[pydantic.BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return [annotation]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) in (
        typing.Union,
        list,
        typing.Annotated,
    ):
        return [m for arg in typing.get_args(annotation) for m in nested_models(arg)]
    return []


MONITORING_KINDS: dict[str, type[pydantic.BaseModel]] = {
    "ServiceMonitor": monitoring.ServiceMonitor,
    "PodMonitor": monitoring.PodMonitor,
    "PrometheusRule": monitoring.PrometheusRule,
}


def validate(obj: dict[str, Any], version: str, crds: dict[Any, Any]) -> None:
    where = f"{obj['kind']} {obj['metadata'].get('name')}"
    if obj["apiVersion"].startswith("monitoring.coreos.com/"):
        model = MONITORING_KINDS[obj["kind"]]
        model.model_validate(obj)
        assert not unknown_fields(model, obj, where), unknown_fields(model, obj, where)
    elif (obj["apiVersion"], obj["kind"]) in crds:
        crds[(obj["apiVersion"], obj["kind"])].validate(obj)
    else:
        kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("case", sorted(CASES))
def test_lint_passes(helm: str, case: str) -> None:
    args = [helm, "lint", "--strict", str(CHART)]
    for s in CASES[case]:
        args += ["--set", s]
    out = subprocess.run(args, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 chart(s) failed" in out.stdout


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_every_rendered_object_validates(helm: str, case: str, version: str) -> None:
    crds = crd_validators()
    objs = render(helm, CASES[case], version)
    assert len(objs) >= 8
    for obj in objs:
        validate(obj, version, crds)


def test_the_validation_can_fail(helm: str) -> None:
    crds = crd_validators()
    objs = render(helm, MONITORS)
    deploy = one(objs, "Deployment")
    deploy["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deploy, "1.33", crds)
    monitor = one(objs, "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["honourLabels"] = True
    with pytest.raises(AssertionError, match="honourLabels"):
        validate(monitor, "1.33", crds)


# ------------------------------------------------------------------------------------------------
# what the values produce


def test_crds_in_the_chart_are_identical_to_crds(helm: str) -> None:
    repo = sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    chart = sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    assert repo == chart == ["kopf-peering.yaml", "scalingsweep.yaml"]
    for name in repo:
        assert (CHART / "crds" / name).read_bytes() == (ROOT / "crds" / name).read_bytes(), name
    rendered = {
        o["metadata"]["name"] for o in by_kind(render(helm, []), "CustomResourceDefinition")
    }
    assert rendered == {
        "scalingsweeps.isoflop.dev",
        "kopfpeerings.kopf.dev",
        "clusterkopfpeerings.kopf.dev",
    }


def operator_role(objs: list[dict[str, Any]]) -> dict[str, Any]:
    """The operator's own ClusterRole (the others are users' rights, aggregated)."""
    (role,) = [o for o in by_kind(objs, "ClusterRole") if o["metadata"]["name"] == "isoflop"]
    return role


def covers(rules: list[dict[str, Any]], group: str, resource: str, verb: str) -> bool:
    return any(
        group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"] for r in rules
    )


# (group, resource, verb) the operator's code uses, and nothing more: kopf's watch and patches,
# its Jobs (get: the uid of one that exists already), Services of multi-node trials, the trial
# records' ConfigMaps, pods' termination messages and dry runs, Events. tests/e2e runs the
# operator with exactly these rights.
NEEDED = [("isoflop.dev", "scalingsweeps", verb) for verb in ("list", "watch", "patch")] + [
    ("isoflop.dev", "scalingsweeps/status", "patch"),
    ("batch", "jobs", "get"),
    ("batch", "jobs", "list"),
    ("batch", "jobs", "create"),
    ("batch", "jobs", "delete"),
    ("", "services", "create"),
    ("", "configmaps", "list"),
    ("", "configmaps", "create"),
    ("", "configmaps", "patch"),
    ("", "pods", "list"),
    ("", "pods", "create"),  # dry runs only: the server judges a trial's pod before its Job
    ("", "events", "create"),
    ("kueue.x-k8s.io", "workloads", "list"),  # why a queued trial waits (cluster/queue.py)
]
KOPF = {("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("get", "list", "watch")}
PEERING = {("kopf.dev", "clusterkopfpeerings", v) for v in ("get", "list", "watch", "patch")}
WEBHOOK = {("authorization.k8s.io", "subjectaccessreviews", "create")}  # cluster-scoped


def test_cluster_wide_rbac_by_default(helm: str) -> None:
    objs = render(helm, [])
    assert not by_kind(objs, "Role")
    rules = operator_role(objs)["rules"]
    for need in NEEDED:
        assert covers(rules, *need), need
    assert covers(rules, "apiextensions.k8s.io", "customresourcedefinitions", "watch")
    flat = [
        (g, r, v)
        for rule in rules
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    ]
    assert set(flat) == set(NEEDED) | KOPF | WEBHOOK | PEERING  # no verb the code never uses
    assert all("*" not in item for item in flat)  # no wildcards
    assert not any(r == "secrets" for _, r, _ in flat)  # trials get S3 keys by reference only
    binding = one(objs, "ClusterRoleBinding")
    sa = one(objs, "ServiceAccount")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": NAMESPACE}
    ]
    container = one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert "--all-namespaces" in container["args"]
    assert "--module=isoflop.cluster.handlers" in container["args"]


def test_namespaced_rbac_is_limited_to_the_listed_namespaces(helm: str) -> None:
    objs = render(helm, CASES["namespaced"])
    roles = {r["metadata"]["namespace"]: r for r in by_kind(objs, "Role")}
    assert sorted(roles) == ["ml", "research"]
    for role in roles.values():
        for need in NEEDED:
            assert covers(role["rules"], *need), need
    bindings = {b["metadata"]["namespace"] for b in by_kind(objs, "RoleBinding")}
    assert bindings == {"ml", "research"}
    cluster = operator_role(objs)["rules"]  # only what kopf and the webhook need
    assert cluster == [
        {
            "apiGroups": ["apiextensions.k8s.io"],
            "resources": ["customresourcedefinitions"],
            "verbs": ["get", "list", "watch"],
        },
        {
            "apiGroups": ["authorization.k8s.io"],
            "resources": ["subjectaccessreviews"],
            "verbs": ["create"],
        },
    ]
    args = one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=ml" in args
    assert "--namespace=research" in args
    assert "--all-namespaces" not in args


def test_operator_pod_is_restricted_and_serves_metrics_and_health(helm: str) -> None:
    objs = render(helm, [])
    deploy = one(objs, "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    assert deploy["spec"]["replicas"] == 1
    assert deploy["spec"]["strategy"]["type"] == "RollingUpdate"  # peered: the new one waits
    unpeered = one(render(helm, ["peering.enabled=false"]), "Deployment")
    assert unpeered["spec"]["strategy"]["type"] == "Recreate"  # never two operators unpeered
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sc["readOnlyRootFilesystem"] is True
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["ISOFLOP_METRICS_PORT"] == "8080"
    # peered by default: a deleted pod's replacement pauses while the old one terminates
    assert env["ISOFLOP_PEERING"] == "isoflop"
    assert one(objs, "ClusterKopfPeering")["metadata"]["name"] == "isoflop"
    assert container["resources"]["limits"]["memory"] == "1Gi"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 8080, "health": 8081, "webhook": 9443}
    assert "--liveness=http://0.0.0.0:8081/healthz" in container["args"]
    assert container["livenessProbe"]["httpGet"]["port"] == "health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    (service,) = [s for s in by_kind(objs, "Service") if s["metadata"]["name"].endswith("-metrics")]
    assert (
        service["spec"]["selector"].items()
        <= deploy["spec"]["template"]["metadata"]["labels"].items()
    )
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    # the monitors and alerts are off unless asked for; the dashboard is on
    assert not by_kind(objs, "ServiceMonitor")
    assert not by_kind(objs, "PrometheusRule")
    assert by_kind(objs, "ConfigMap")


def test_ha_runs_peered_replicas(helm: str) -> None:
    objs = render(helm, CASES["ha"])
    deploy = one(objs, "Deployment")
    assert deploy["spec"]["replicas"] == 3
    assert deploy["spec"]["strategy"]["type"] == "RollingUpdate"
    env = {
        e["name"]: e.get("value")
        for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["ISOFLOP_PEERING"] == "isoflop"
    assert one(objs, "ClusterKopfPeering")["metadata"]["name"] == "isoflop"
    assert covers(operator_role(objs)["rules"], "kopf.dev", "clusterkopfpeerings", "patch")
    # namespaced: one KopfPeering per served namespace, and the Role may patch it
    objs = render(helm, CASES["ha-namespaced-monitors"])
    peerings = by_kind(objs, "KopfPeering")
    assert [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in peerings] == [
        ("ml", "isoflop")
    ]
    assert covers(one(objs, "Role")["rules"], "kopf.dev", "kopfpeerings", "patch")
    assert not by_kind(objs, "ClusterKopfPeering")


def test_monitors_select_the_operator_and_the_trial_pods(helm: str) -> None:
    objs = render(helm, MONITORS)
    monitor = one(objs, "ServiceMonitor")
    selected = [
        s
        for s in by_kind(objs, "Service")
        if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
    ]
    assert [s["metadata"]["name"] for s in selected] == ["isoflop-metrics"]  # not the webhook's
    service = selected[0]
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["honorLabels"] is True  # the sweep's namespace label, not the operator's
    assert endpoint["relabelings"][0]["replacement"] == "isoflop-operator"  # the alerts' job
    env = one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "ISOFLOP_PROMETHEUS_URL", "value": MONITORS[3].split("=", 1)[1]} in env

    # the PodMonitor selects the pods of the Jobs the operator really builds
    pod_monitor = one(objs, "PodMonitor")
    sweep = api.load_sweep(ROOT / "examples" / "paper-in-context.yaml")
    trial = plan(sweep.spec).trials[0]
    cfg = train_config(sweep.spec, sweep.name, trial, **manifests.cluster_config(sweep, trial))
    objs_of_trial = manifests.trial_objects(sweep, "uid", "ml", trial, cfg)
    job = next(o for o in objs_of_trial if o["kind"] == "Job")
    template = job["spec"]["template"]
    pod_labels = template["metadata"]["labels"]
    selector = pod_monitor["spec"]["selector"]
    assert selector["matchLabels"].items() <= pod_labels.items()
    for expr in selector["matchExpressions"]:
        assert expr["operator"] == "Exists"
        assert expr["key"] in pod_labels
    ports = {p["name"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
    assert pod_monitor["spec"]["podMetricsEndpoints"][0]["port"] in ports
    assert pod_monitor["spec"]["namespaceSelector"] == {"any": True}
    objs = render(helm, CASES["ha-namespaced-monitors"])
    assert one(objs, "PodMonitor")["spec"]["namespaceSelector"] == {"matchNames": ["ml"]}


def test_the_prometheus_rule_is_the_rules_file(helm: str) -> None:
    rule = one(render(helm, MONITORS), "PrometheusRule")
    assert rule["spec"] == yaml.safe_load(RULES.read_text())


def test_the_dashboard_config_map_carries_the_dashboard(helm: str) -> None:
    objs = render(
        helm, ["dashboard.namespace=monitoring", "dashboard.annotations.grafana_folder=ML"]
    )
    cm = one(objs, "ConfigMap")
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "ML"}
    assert json.loads(cm["data"]["isoflop.json"]) == json.loads(DASHBOARD.read_text())
    assert not by_kind(render(helm, ["dashboard.enabled=false"]), "ConfigMap")


def test_every_value_is_documented_and_in_the_schema() -> None:
    """Each key the schema defines has a comment line above it in values.yaml, and values.yaml
    holds exactly the schema's keys (free-form maps such as labels hold examples)."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, dict[str, Any] | None]] = [(-1, schema)]
    undocumented, unknown = [], []
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "- ")):
            continue
        indent = len(line) - len(line.lstrip())
        while stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1]
        key = stripped.split(":", 1)[0]
        node = None
        if parent is not None and "properties" in parent:  # a key the chart defines
            node = parent["properties"].get(key)
            if node is None:
                unknown.append(key)
            elif not lines[i - 1].strip().startswith("#") and "properties" not in node:
                undocumented.append(key)
        stack.append((indent, node))
    assert not unknown, f"values.yaml keys missing from values.schema.json: {unknown}"
    assert not undocumented, f"values without a comment: {undocumented}"
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.Draft7Validator(schema).validate(defaults)


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("replica=2", "replica"),  # a typo
        ("replicas=0", "/replicas"),
        ("operator.prometheusUrl=prometheus:9090", "/operator/prometheusUrl"),
        ("watch.namespaces={ML}", "/watch/namespaces/0"),
        ("metrics.port=80000", "/metrics/port"),
        ("admission.failurePolicy=Never", "/admission/failurePolicy"),
        ("admission.timeoutSeconds=31", "/admission/timeoutSeconds"),
        ("queue.default=Team A", "/queue/default"),  # a LocalQueue name is a label value
    ],
)
def test_bad_values_fail_to_render_naming_the_value(helm: str, value: str, named: str) -> None:
    out = subprocess.run(
        [helm, "template", "isoflop", str(CHART), "--set", value],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode != 0
    assert named in out.stderr


def test_policy_allowlists_reach_the_operator_as_environment_variables(helm: str) -> None:
    def env(sets: list[str]) -> dict[str, str]:
        container = one(render(helm, sets), "Deployment")["spec"]["template"]["spec"]
        return {e["name"]: e.get("value", "") for e in container["containers"][0]["env"]}

    default = env([])
    assert "ISOFLOP_ALLOWED_IMAGES" not in default  # null: any image
    assert "ISOFLOP_DEFAULT_QUEUE" not in default  # no queue: sweeps bypass Kueue
    assert env(["queue.default=team-a"])["ISOFLOP_DEFAULT_QUEUE"] == "team-a"
    assert default["ISOFLOP_ALLOWED_PROMETHEUS_URLS"] == ""  # sweeps name no URL of their own
    chosen = env(
        [
            "policy.images={ghcr.io/isoflop/*,registry.corp/ml/*}",
            "policy.serviceAccounts={default}",
            "operator.prometheusUrl=http://prometheus-operated.monitoring:9090",
        ]
    )
    assert chosen["ISOFLOP_ALLOWED_IMAGES"] == "ghcr.io/isoflop/*,registry.corp/ml/*"
    assert chosen["ISOFLOP_ALLOWED_SERVICE_ACCOUNTS"] == "default"
    assert chosen["ISOFLOP_ALLOWED_PROMETHEUS_URLS"] == "http://prometheus-operated.monitoring:9090"
    assert "ISOFLOP_MLFLOW_TRACKING_URI" not in default  # no default server: sweeps name theirs
    assert default["ISOFLOP_ALLOWED_MLFLOW_URIS"] == ""  # and none is allowed
    tracked = [
        "tracking.mlflow.trackingUri=http://mlflow.mlflow:5000",
        "tracking.mlflow.credentialsSecret=isoflop-mlflow",
        "policy.mlflowTrackingUris={https://mlflow.team-a.corp/*}",
    ]
    assert env(tracked)["ISOFLOP_MLFLOW_TRACKING_URI"] == "http://mlflow.mlflow:5000"
    assert env(tracked)["ISOFLOP_ALLOWED_MLFLOW_URIS"] == (
        "https://mlflow.team-a.corp/*,http://mlflow.mlflow:5000"
    )
    # the operator's own MLflow credentials, renamed so MLflow's client never sends them itself
    container = one(render(helm, tracked), "Deployment")["spec"]["template"]["spec"]
    assert container["containers"][0]["envFrom"] == [
        {"prefix": "ISOFLOP_", "secretRef": {"name": "isoflop-mlflow"}}
    ]
    plain = one(render(helm, []), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert "envFrom" not in plain


# ------------------------------------------------------------------------------------------------
# the admission webhook


def pem_certificate(b64: str) -> Any:
    import base64

    from cryptography import x509

    return x509.load_pem_x509_certificate(base64.b64decode(b64))


def test_the_webhook_is_registered_with_its_own_ca_and_served_by_the_operator(helm: str) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import padding

    from isoflop.cluster.admission import WEBHOOK_ID

    objs = render(helm, [])
    (config,) = by_kind(objs, "ValidatingWebhookConfiguration")
    (hook,) = config["webhooks"]
    assert hook["failurePolicy"] == "Fail"  # an unreachable webhook admits nothing unchecked
    assert hook["sideEffects"] == "None"
    (rule,) = hook["rules"]
    assert rule["apiGroups"] == [api.GROUP]
    assert rule["resources"] == [api.PLURAL]
    assert rule["operations"] == ["CREATE", "UPDATE"]  # not status: the operator's own writes
    assert "namespaceSelector" not in hook  # every namespace, as the operator watches
    client = hook["clientConfig"]
    assert client["service"]["path"] == f"/{WEBHOOK_ID}"  # kopf's route for the handler
    (service,) = [s for s in by_kind(objs, "Service") if s["metadata"]["name"].endswith("-webhook")]
    assert client["service"]["name"] == service["metadata"]["name"]
    assert client["service"]["namespace"] == NAMESPACE
    deploy = one(objs, "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    assert (
        service["spec"]["selector"].items()
        <= deploy["spec"]["template"]["metadata"]["labels"].items()
    )
    assert service["spec"]["ports"] == [{"name": "webhook", "port": 443, "targetPort": "webhook"}]

    # the serving certificate: signed by the CA the API server is given, for the Service's name
    (secret,) = [
        s for s in by_kind(objs, "Secret") if s["metadata"]["name"].endswith("-webhook-tls")
    ]
    ca, cert = pem_certificate(client["caBundle"]), pem_certificate(secret["data"]["tls.crt"])
    assert secret["data"]["ca.crt"] == client["caBundle"]
    ca.public_key().verify(  # raises unless the CA signed it
        cert.signature,
        cert.tbs_certificate_bytes,
        padding.PKCS1v15(),
        cert.signature_hash_algorithm,
    )
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert f"isoflop-webhook.{NAMESPACE}.svc" in names.get_values_for_type(x509.DNSName)

    # the operator serves it: port, certificate files from the Secret, SubjectAccessReviews allowed
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["ISOFLOP_WEBHOOK_PORT"] == "9443"
    mount = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}["webhook-tls"]
    assert env["ISOFLOP_WEBHOOK_CERT"] == f"{mount}/tls.crt"
    assert env["ISOFLOP_WEBHOOK_KEY"] == f"{mount}/tls.key"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["webhook-tls"]["secret"]["secretName"] == secret["metadata"]["name"]
    assert covers(operator_role(objs)["rules"], *next(iter(WEBHOOK)))


def test_the_webhook_follows_the_watched_namespaces_and_can_be_turned_off(helm: str) -> None:
    (config,) = by_kind(render(helm, CASES["namespaced"]), "ValidatingWebhookConfiguration")
    (hook,) = config["webhooks"]
    (expr,) = hook["namespaceSelector"]["matchExpressions"]
    assert expr == {
        "key": "kubernetes.io/metadata.name",
        "operator": "In",
        "values": ["ml", "research"],
    }
    objs = render(helm, ["admission.enabled=false", "admission.failurePolicy=Ignore"])
    assert not by_kind(objs, "ValidatingWebhookConfiguration")
    assert not by_kind(objs, "Secret")
    container = one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert not any(e["name"].startswith("ISOFLOP_WEBHOOK") for e in container["env"])
    assert not covers(operator_role(objs)["rules"], *next(iter(WEBHOOK)))


def test_users_get_sweeps_through_the_built_in_roles(helm: str) -> None:
    roles = {o["metadata"]["name"]: o for o in by_kind(render(helm, []), "ClusterRole")}
    edit, view = roles["isoflop-edit"], roles["isoflop-view"]
    labels = "rbac.authorization.k8s.io/aggregate-to-"
    assert {k for k, v in edit["metadata"]["labels"].items() if k.startswith(labels)} == {
        f"{labels}admin",
        f"{labels}edit",
    }
    assert view["metadata"]["labels"][f"{labels}view"] == "true"
    assert covers(edit["rules"], api.GROUP, api.PLURAL, "create")
    assert not covers(view["rules"], api.GROUP, api.PLURAL, "create")
    assert covers(view["rules"], api.GROUP, api.PLURAL, "watch")
    off = render(helm, ["rbac.aggregateToDefaultRoles=false"])
    assert [o["metadata"]["name"] for o in by_kind(off, "ClusterRole")] == ["isoflop"]
