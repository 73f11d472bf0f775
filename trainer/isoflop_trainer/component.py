"""The launch description of one trial: a torchx AppDef running the trainer under torchrun (through
`isoflop-torchrun`, isoflop_trainer.launch, which passes the ranks' exit code on).

The local runner executes it as a process; the Kubernetes backend turns it into a pod template.
Single node: `torchrun --standalone`. Several nodes: the node rank and the rank-0 address come from
torchrun's own environment variables, PET_NODE_RANK and PET_MASTER_ADDR, which the backend sets
(on Kubernetes, PET_NODE_RANK=$(JOB_COMPLETION_INDEX) of an Indexed Job).
"""

from __future__ import annotations

import json
from typing import Any

from torchx import specs

ROLE = "trainer"
# torchrun that exits with its ranks' exit code, and without a traceback when stopped
LAUNCHER = "isoflop-torchrun"
MASTER_PORT = 29500
METRICS_PORT = 9400


def trial(
    config: dict[str, Any],
    image: str,
    name: str = "isoflop-trial",
    nodes: int = 1,
    gpus_per_node: int = 0,
    procs_per_node: int | None = None,
    cpu: int = 2,
    memMB: int = 4096,  # torchx's spelling
    env: dict[str, str] | None = None,
    max_retries: int = 0,
) -> specs.AppDef:
    """One trial: torchrun over `nodes` x (GPUs per node, or 1 process on CPU)."""
    if nodes < 1:
        raise ValueError(f"nodes must be at least 1, got {nodes}")
    procs = procs_per_node or max(gpus_per_node, 1)
    args = ["--nnodes", str(nodes), "--nproc-per-node", str(procs)]
    if nodes == 1:
        args.append("--standalone")
    else:
        args += ["--master-port", str(MASTER_PORT)]
    args += ["-m", "isoflop_trainer.cli", "train", "--config-json", json.dumps(config)]
    role = specs.Role(
        name=ROLE,
        image=image,
        entrypoint=LAUNCHER,
        args=args,
        env={"PYTHONUNBUFFERED": "1", **(env or {})},
        num_replicas=nodes,
        resource=specs.Resource(cpu=cpu, gpu=gpus_per_node, memMB=memMB),
        max_retries=max_retries,
        port_map={"c10d": MASTER_PORT, "metrics": METRICS_PORT},
    )
    return specs.AppDef(name=name, roles=[role])
