"""MLflow tracking, never in the way of training: one run fed from a queue by a background thread.

The trainer (rank 0) and the sweep's controller (`isoflop run`, the operator) log through a
`Tracker`. Its calls only append to a buffer; a daemon thread finds or creates the run, then sends
the buffer in batches (`log_batch`: 1000 metrics, 100 params, 100 tags a request). A request that
fails is retried with a growing pause: while the server is unreachable everything waits for it
(`MAX_BUFFERED` values at most); a batch it refuses `ATTEMPTS` times, or what is still buffered
when the tracker closes, is dropped and counted, with a warning that names the last error. A
tracker that is down costs the trial nothing but a bounded wait at its end (`flush_seconds`), and
none at all once it is known down.

A run is found again rather than made twice: by the id a checkpoint kept (`run_id`), else by its
key tag (`isoflop.key`, the sweep's uid and the trial), else created. A resumed trial continues
the run of its first attempt. A trial's parent (its budget's run, made by the controller) is
given by id, or found by its key when the controller could not say it yet.

A trial without a tracker never imports mlflow-skinny; a trial with one imports it before it trains
(`preload`), and a controller's trackers in their thread, one at a time.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from isoflop_trainer.config import DiTConfig, TrainConfig

KEY_TAG = "isoflop.key"
PARENT_TAG = "isoflop.parent"  # the key of the run a run nests under
# the MLflow UI shows a sweep's experiment as model training (runs, charts), not as GenAI traces
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
ATTEMPTS = 4  # tries of one request before its batch is dropped
PAUSES = (0.5, 1.0, 2.0, 4.0)  # seconds between tries, then the last one again
MAX_BUFFERED = 100_000  # metric values held while the tracker is down; older ones are dropped
SEND_EVERY = 1.0  # seconds between batches while values keep coming (sooner at 1000 values)
# MLflow's client retries a failed request 7 times over minutes by default; here the thread
# retries, so each request is tried once, for a few seconds
CLIENT_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
_SAFE = re.compile(r"^[A-Za-z0-9._/:+-]+$")


_IMPORT = threading.Lock()  # mlflow imported by two trackers' threads at once breaks protobuf


def preload() -> None:
    """Import what a tracker's thread uses (about 1.6 s of Python on one core): a trial does it
    before it trains, where a thread importing it would hold the GIL against the first steps."""
    with _IMPORT:
        for module in ("mlflow.entities", "mlflow.exceptions", "mlflow.tracking"):
            importlib.import_module(module)


def client_for(uri: str) -> Any:
    """An MlflowClient for the URI, its requests tried once (CLIENT_ENV, unless already set)."""
    for name, value in CLIENT_ENV.items():
        os.environ.setdefault(name, value)
    preload()
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def experiment_id(client: Any, name: str, tags: Mapping[str, str] | None = None) -> str:
    """The experiment's id, created if it is not there (by whoever asks first)."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            client.restore_experiment(found.experiment_id)
        return str(found.experiment_id)
    try:
        return str(client.create_experiment(name, tags=dict(tags or {})))
    except MlflowException:  # another trial created it in between
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return str(found.experiment_id)


def find_run(client: Any, experiment: str, key: str) -> str | None:
    """The id of the run tagged with this key, if there is one."""
    if not _SAFE.match(key):
        raise ValueError(f"a tracking key is letters, digits and ._/:+- only, not {key!r}")
    runs = client.search_runs(
        [experiment], filter_string=f"tags.`{KEY_TAG}` = '{key}'", max_results=1
    )
    return str(runs[0].info.run_id) if runs else None


_CAUSES = (
    "Connection refused",
    "Connection reset",
    "Read timed out",
    "timed out",
    "Name or service not known",
    "Temporary failure in name resolution",
    "No route to host",
    "Remote end closed connection",
)


def describe(err: Exception) -> str:
    """A failed request in a line: the endpoint and the cause (a refused connection, a timeout),
    or the server's own answer."""
    text = str(err)
    sent = re.search(r"API request to \S*?/api/2\.0/mlflow/(\S+) failed", text)
    where = f"{sent.group(1)}: " if sent else ""
    cause = next((c for c in _CAUSES if c in text), None)
    if cause is None:
        cause = f"{type(err).__name__}: {text[:200]}"
    return f"{where}{cause}"


def refused(err: Exception) -> bool:
    """The server answered and said no (an HTTP 4xx): trying the same again will not help."""
    status = getattr(err, "get_http_status_code", None)
    try:
        code = int(status()) if callable(status) else 0
    except (TypeError, ValueError):
        return False
    return 400 <= code < 500


@dataclass
class Record:
    """What a tracker did: in the trial's result (`tracking`) and the sweep's status."""

    run_id: str | None = None
    experiment_id: str | None = None
    logged: int = 0  # metric values the server took
    dropped: int = 0  # metric values, params and tags it never took
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Tracker:
    """One MLflow run. `params`, `metrics`, `tags` and `artifact` return at once; `close` waits
    at most `flush_seconds` for what is buffered and returns the Record."""

    def __init__(
        self,
        uri: str,
        experiment: str,
        key: str,
        *,
        run_name: str | None = None,
        tags: Mapping[str, str] | None = None,
        parent: str | None = None,
        parent_key: str | None = None,
        run_id: str | None = None,
        flush_seconds: float = 10.0,
        client: Callable[[str], Any] = client_for,
        start: bool = True,
    ) -> None:
        self.uri, self.experiment, self.key = uri, experiment, key
        self.run_name, self.parent, self.parent_key = run_name, parent, parent_key
        self.tags = {**(tags or {}), KEY_TAG: key}
        self.flush_seconds = flush_seconds
        self.record = Record(run_id=run_id)
        self._client_factory = client
        self._lock = threading.Condition()
        self._metrics: list[tuple[str, float, int, int]] = []  # key, value, ms, step
        self._params: dict[str, str] = {}
        self._new_tags: dict[str, str] = {}
        self._artifacts: list[tuple[str, str | None]] = []
        self._end: str | None = None  # the status to end the run with
        self._ended = False  # the server took it
        self._closing = False
        self._closed = threading.Event()  # set with _closing: ends a pause between requests
        self._failures = 0  # consecutive failed requests
        self._down = False  # the last request found no server (rather than a refusal)
        self._last_error = ""
        self._thread = threading.Thread(target=self._work, name="mlflow-tracker", daemon=True)
        if start:
            self._thread.start()

    def start(self, run_id: str | None = None) -> None:
        """Begin sending (a tracker made with start=False), continuing `run_id` if given: the
        run a checkpoint kept. What was logged before is sent too."""
        if self._thread.is_alive() or self._thread.ident is not None:
            return
        if run_id is not None:
            self.record.run_id = run_id
        self._thread.start()

    @property
    def run_id(self) -> str | None:
        return self.record.run_id

    # -- what callers do (never blocks on the server) ---------------------------------------------

    def params(self, values: Mapping[str, Any]) -> None:
        with self._lock:
            self._params.update({k: str(v) for k, v in values.items() if v is not None})
            self._lock.notify()

    def set_tags(self, values: Mapping[str, str]) -> None:
        with self._lock:
            self._new_tags.update(values)
            self._lock.notify()

    def metrics(self, step: int, values: Mapping[str, float | None]) -> None:
        ms = int(time.time() * 1000)
        with self._lock:
            self._metrics += [(k, float(v), ms, step) for k, v in values.items() if v is not None]
            extra = len(self._metrics) - MAX_BUFFERED
            if extra > 0:  # the oldest go first: the newest say most about the trial
                del self._metrics[:extra]
                self._drop(extra, "the buffer was full while the tracker was unreachable")
            self._lock.notify()

    def artifact(self, path: str, folder: str | None = None) -> None:
        with self._lock:
            self._artifacts.append((path, folder))
            self._lock.notify()

    def end(self, status: str | None = "FINISHED") -> None:
        """Ask for the run to end with `status` (FINISHED, FAILED, KILLED; None: leave it
        RUNNING, as a preempted trial's that resumes) once what is buffered is sent; returns at
        once (`wait` waits)."""
        self.start()  # a tracker never started still sends what it holds
        with self._lock:
            self._end, self._closing = status, True
            self._closed.set()
            self._lock.notify()

    def wait(self, seconds: float | None = None) -> Record:
        """Wait for the end `end` asked for: `seconds` at most (`flush_seconds` unless given; a
        request's timeout when the tracker is known down), then count what it never took."""
        seconds = self.flush_seconds if seconds is None else seconds
        if self._down:  # known down: one more try, not a whole flush
            seconds = min(seconds, float(CLIENT_ENV["MLFLOW_HTTP_REQUEST_TIMEOUT"]) + 1)
        self._thread.join(max(seconds, 0.0))
        with self._lock:
            left = len(self._metrics) + len(self._params) + len(self._new_tags)
            left += len(self._artifacts) + (self._end is not None and not self._ended)
            if self.record.run_id is None and (left or self._failures):
                self._drop(max(left, 1), "no run was made")
            else:
                self._drop(left, "still unsent when the run ended")
            self._metrics, self._params, self._new_tags, self._artifacts = [], {}, {}, []
            return self.record

    def close(self, status: str | None = "FINISHED") -> Record:
        """`end`, then `wait`: what a trial does as it ends."""
        self.end(status)
        return self.wait()

    # -- the thread -------------------------------------------------------------------------------

    def _drop(self, count: int, why: str) -> None:
        if count <= 0:
            return
        self.record.dropped += count
        reason = f" (last error: {self._last_error})" if self._last_error else ""
        warning = f"MLflow: {count} values not logged, {why}{reason}"
        if len(self.record.warnings) < 10:
            self.record.warnings.append(warning)

    def _work(self) -> None:
        client: Any = None
        tries = 0
        while True:
            with self._lock:
                while not self._pending() and not self._closing:
                    self._lock.wait()
                if self._closing and not self._pending() and self._end is None:
                    return
            try:
                if client is None:
                    client = self._client_factory(self.uri)
                if self.record.run_id is None or self.record.experiment_id is None:
                    self._resolve(client)
                if not self._send(client):
                    return  # everything sent and the run ended
                tries, self._failures, self._down = 0, 0, False
                if len(self._metrics) < 1000:  # a batch a second, not a request per log call
                    self._closed.wait(SEND_EVERY)
            except Exception as err:  # the server down, refusing, or answering nonsense
                with self._lock:
                    self._failures += 1
                    self._last_error = describe(err)
                    # a batch the server refuses goes after a few tries; while it is down,
                    # everything waits (MAX_BUFFERED at most) for it to come back
                    self._down = not refused(err)
                    tries = 0 if self._down else tries + 1
                    if tries >= ATTEMPTS and self.record.run_id is not None:
                        self._drop_batch()
                        tries = 0
                    closing = self._closing
                if closing and self._down and self._failures > 1:
                    return  # down as the run ends: wait() counts what is left
                # new values do not end the pause (a retry per log call would load the trainer);
                # the run's end does: one last try
                self._closed.wait(PAUSES[min(self._failures, len(PAUSES)) - 1])

    def _pending(self) -> bool:
        return bool(self._metrics or self._params or self._new_tags or self._artifacts)

    def _resolve(self, client: Any) -> None:
        """The experiment, then the run: the kept id, else the one with this key, else a new
        one; a continued run is RUNNING again."""
        exp = experiment_id(client, self.experiment, EXPERIMENT_TAGS)
        run_id = self.record.run_id
        if run_id is not None:
            try:
                if client.get_run(run_id).info.lifecycle_stage == "deleted":
                    run_id = None
            except Exception as err:  # the kept run is gone (a new server, a deleted run)
                if "RESOURCE_DOES_NOT_EXIST" not in str(err):
                    raise
                run_id = None
        if run_id is None:
            run_id = find_run(client, exp, self.key)
        if run_id is None:
            tags = dict(self.tags)
            parent = self.parent
            if parent is None and self.parent_key:  # made by the sweep's controller meanwhile
                parent = find_run(client, exp, self.parent_key)
            if parent:
                tags["mlflow.parentRunId"] = parent
            run = client.create_run(exp, tags=tags, run_name=self.run_name)
            run_id = str(run.info.run_id)
        else:
            client.update_run(run_id, status="RUNNING")
        self.record.run_id, self.record.experiment_id = run_id, exp

    def _send(self, client: Any) -> bool:
        """One batch (or artifact, or the run's end); False once the run has ended."""
        from mlflow.entities import Metric, Param, RunTag

        with self._lock:
            metrics = self._metrics[:1000]
            params = dict(list(self._params.items())[:100])
            tags = dict(list(self._new_tags.items())[:100])
            artifact = self._artifacts[0] if self._artifacts else None
            end = self._end if self._closing and not self._pending() else None
        run = self.record.run_id
        if metrics or params or tags:
            client.log_batch(
                run,
                metrics=[Metric(k, v, ms, step) for k, v, ms, step in metrics],
                params=[Param(k, v) for k, v in params.items()],
                tags=[RunTag(k, v) for k, v in tags.items()],
            )
            with self._lock:
                del self._metrics[: len(metrics)]
                for k in params:
                    self._params.pop(k, None)
                for k in tags:
                    self._new_tags.pop(k, None)
                self.record.logged += len(metrics)
            return True
        if artifact is not None:
            client.log_artifact(run, artifact[0], artifact[1])
            with self._lock:
                self._artifacts.pop(0)
            return True
        if end is not None:
            client.set_terminated(run, status=end)
            self._ended = True
        return False

    def _drop_batch(self) -> None:
        """The batch the server refused ATTEMPTS times (lock held)."""
        if self._metrics or self._params or self._new_tags:
            n = min(len(self._metrics), 1000) + min(len(self._params), 100)
            n += min(len(self._new_tags), 100)
            del self._metrics[:1000]
            for k in list(self._params)[:100]:
                self._params.pop(k)
            for k in list(self._new_tags)[:100]:
                self._new_tags.pop(k)
            self._drop(n, f"refused {ATTEMPTS} times")
        elif self._artifacts:
            self._artifacts.pop(0)
            self._drop(1, f"an artifact refused {ATTEMPTS} times")


# -- a trial's run ---------------------------------------------------------------------------------

RUN_END = {"succeeded": "FINISHED", "failed": "FAILED", "preempted": None}  # None: it resumes


def for_trial(cfg: TrainConfig) -> Tracker | None:
    """The trial's tracker, not yet started (the trainer starts it with the run id its
    checkpoint kept); None without a tracking URI."""
    if not cfg.tracking_uri or not cfg.tracking_experiment:
        return None
    preload()
    key = cfg.tracking_tags.get(KEY_TAG) or f"{cfg.sweep}/{cfg.trial}"
    tags = {
        "isoflop.sweep": cfg.sweep,
        "isoflop.trial": cfg.trial,
        "isoflop.budget": f"{cfg.budget:g}",
        "isoflop.kind": "trial",
        **cfg.tracking_tags,
    }
    return Tracker(
        cfg.tracking_uri,
        cfg.tracking_experiment,
        key,
        run_name=cfg.trial,
        tags=tags,
        parent=cfg.tracking_parent,
        parent_key=cfg.tracking_tags.get(PARENT_TAG),
        flush_seconds=cfg.tracking_flush_seconds,
        start=False,
    )


def trial_params(cfg: TrainConfig) -> dict[str, Any]:
    """What a trial is, as MLflow params: the family and shape, N, D and C, exact FLOPs, and how
    it trains."""
    model = cfg.model
    samples = cfg.steps * cfg.global_batch_size
    shape = (
        f"depth {model.depth} x width {model.width} ({model.heads} heads)"
        if isinstance(model, DiTConfig)
        else f"{model.transformer} {json.dumps(model.arguments, sort_keys=True)}"[:500]
    )
    return {
        "family": model.family,
        "shape": shape,
        "N": model.params().total,
        "D": samples * model.tokens_per_sample,
        "C": f"{cfg.budget:g}",
        "flops": samples * model.flops_per_sample().total,
        "learning_rate": cfg.learning_rate,
        "global_batch_size": cfg.global_batch_size,
        "steps": cfg.steps,
        "seed": cfg.seed,
        "schedule": cfg.schedule,
        "precision": cfg.precision,
        **cfg.tracking_params,
    }
