"""`restyle batch --ray`: the same rows, files and results.jsonl as the local run, with the rows' work done
by Ray Data actors that each hold the models (one per GPU with `num_gpus=1`; CPU actors without GPUs).

This process (the driver) keeps what must stay single: it reads the manifest, decides what to skip from
results.jsonl, writes every row's line as its actor hands it back, and owns the lock; a killed driver
leaves whole lines only, and the next run resumes from them. The actors read photos from paths or URIs
(`restyle.batch.storage`) and write each row's files into the output: a folder every node sees at the same
path (local disk for a one-machine cluster, else a shared filesystem), or a URI they upload to.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from restyle.batch.manifest import Row
from restyle.batch.runner import BatchOptions, BatchRunner, OnRecord, RowWork
from restyle.errors import InvalidParameterError

log = logging.getLogger("restyle")

MAX_RESTARTS = 2  # an actor that dies (a node lost, out of memory) is restarted this often, its task retried


@dataclass(frozen=True)
class RayOptions:
    """Where and on how many actors the rows run."""

    address: str | None = None  # None: RAY_ADDRESS, else a local instance on this machine
    actors: int | None = None  # None: one per GPU of the cluster, else 1
    gpus_per_actor: float | None = None  # None: 1 when the cluster has GPUs, else 0
    cpus_per_actor: float | None = None  # None: 1 with GPUs, else the cluster's CPUs / actors

    def check(self) -> None:
        if self.actors is not None and self.actors < 1:
            raise InvalidParameterError(f"--actors: must be at least 1, got {self.actors}", field="actors")
        for name in ("gpus_per_actor", "cpus_per_actor"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                flag = "--" + name.replace("_", "-")
                raise InvalidParameterError(f"{flag}: must be 0 or more, got {value}", field=name)


@dataclass(frozen=True)
class Plan:
    """The actor pool a run asks Ray for."""

    actors: int
    gpus: float
    cpus: float
    rows_per_task: int


def plan(
    options: RayOptions, rows: int, gpus_in_cluster: int, cpus_in_cluster: int, window: int = 16
) -> Plan:
    """Actors, resources per actor and rows per task for `rows` rows on a cluster of that size."""
    gpus = options.gpus_per_actor if options.gpus_per_actor is not None else (1.0 if gpus_in_cluster else 0.0)
    if options.actors is not None:
        actors = options.actors
    elif gpus:
        actors = max(1, int(gpus_in_cluster // gpus))
    else:
        actors = 1
    if options.cpus_per_actor is not None:
        cpus = options.cpus_per_actor
    else:
        cpus = 1.0 if gpus else float(max(1, cpus_in_cluster // actors))
    # `window` rows per task: rows are grouped into denoising runs as the local run groups them
    return Plan(actors=actors, gpus=gpus, cpus=cpus, rows_per_task=max(1, min(window, rows)))


@dataclass(frozen=True)
class EngineSpec:
    """What an actor needs to build the driver's engine: its resolved models and whether it is the preview."""

    config: Any  # ModelConfig (paths or hub ids every node can load)
    preview: bool

    @classmethod
    def of(cls, engine: Any) -> EngineSpec:
        from restyle.raysupport import absolute_config

        return cls(absolute_config(engine.config), bool(engine.preview))

    def build(self) -> Any:
        from restyle.engine import Restyler

        return Restyler(self.config, preview=self.preview)


class RowActor:
    """One Ray Data actor: an engine loaded once, then batches of row positions in, results lines out."""

    def __init__(
        self,
        spec: EngineSpec,
        rows: list[Row],
        earlier: dict[str, dict[str, Any]],
        out: str,
        options: BatchOptions,
        threads: int,
    ) -> None:
        import torch

        if threads >= 1:
            torch.set_num_threads(threads)
        self.rows = rows
        self.lines: list[dict[str, Any]] = []
        self.work = RowWork(spec.build(), out, options, self.lines.append, earlier.get)
        self.work.load(rows)
        import weakref

        weakref.finalize(self, self.work.close)  # the staging folder goes with the actor

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        self.lines.clear()
        for first, count in zip(batch["first"], batch["count"], strict=True):
            self.work.run(self.rows[int(first) : int(first) + int(count)])
        return {"line": [json.dumps(line, ensure_ascii=False, default=str) for line in self.lines]}


class RayBatchRunner(BatchRunner):
    """A BatchRunner whose rows run on Ray Data actors (see the module's docstring)."""

    def __init__(
        self,
        engine: Any,
        out: str | Path,
        options: BatchOptions | None = None,
        ray_options: RayOptions | None = None,
        *,
        on_record: OnRecord | None = None,
        on_plan: Any = None,
    ) -> None:
        super().__init__(engine, out, options, on_record=on_record)
        self.ray_options = ray_options or RayOptions()
        self.ray_options.check()
        self.on_plan = on_plan  # called with the Plan once the cluster is known
        self.plan: Plan | None = None

    def _execute(self, rows: list[Row]) -> None:
        from restyle.raysupport import cluster_cpus, cluster_gpus, connect, disconnect, require_ray

        require_ray()
        assert self._log is not None
        connection = connect(self.ray_options.address)
        try:
            import ray.data

            gpus = cluster_gpus()
            self.plan = plan(self.ray_options, len(rows), gpus, cluster_cpus(), window=self.options.window)
            if self.plan.gpus and self.plan.gpus * self.plan.actors > gpus:
                raise InvalidParameterError(
                    f"--gpus-per-actor: {self.plan.actors} actor(s) x {self.plan.gpus:g} GPU need "
                    f"{self.plan.actors * self.plan.gpus:g} GPUs; the Ray cluster has {gpus}",
                    field="gpus_per_actor",
                )
            if self.on_plan is not None:
                self.on_plan(self.plan)
            self._stream(ray.data, rows)
        finally:
            if connection.started_here:
                disconnect(connection)

    def _stream(self, data: Any, rows: list[Row]) -> None:
        assert self._log is not None and self.plan is not None
        p = self.plan
        # actors may run elsewhere, in another folder: relative paths resolve from here, now
        rows = [replace(row, base=row.base.resolve()) for row in rows]
        earlier = {row.key: self._log.latest[row.key] for row in rows if row.key in self._log.latest}
        context = data.DataContext.get_current()
        context.enable_progress_bars = False  # restyle's own bar counts rows
        context.execution_options.preserve_order = False
        # one item per task: a window of consecutive rows, so rows are grouped exactly as the local run
        # groups them (and a 30k-row catalogue is 30k / window blocks, not 30k)
        starts = range(0, len(rows), p.rows_per_task)
        tasks = [{"first": i, "count": min(p.rows_per_task, len(rows) - i)} for i in starts]
        items = data.from_items(tasks, override_num_blocks=len(tasks))
        with warnings.catch_warnings():
            # restart limits have no named parameter in Ray 2.60; ray_remote_args is deprecated for 2.64
            warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
            results = items.map_batches(
                RowActor,
                fn_constructor_kwargs=dict(
                    spec=EngineSpec.of(self.engine),
                    rows=rows,
                    earlier=earlier,
                    out=self.dest.uri or str(self.out.resolve()),
                    options=self.options,
                    threads=max(1, int(p.cpus)),
                ),
                batch_size=1,
                compute=data.ActorPoolStrategy(size=p.actors),
                num_gpus=p.gpus,
                num_cpus=p.cpus,
                # a row that kills its actor (out of host memory) must not be retried forever
                max_restarts=MAX_RESTARTS,
                max_task_retries=MAX_RESTARTS,
            )
        for item in results.iter_rows():
            self._write(json.loads(item["line"]))


__all__ = ["EngineSpec", "Plan", "RayBatchRunner", "RayOptions", "RowActor", "plan"]
