"""The batch loop on one machine: prepare rows one by one, denoise waiting rows of one key together, save
each row as `restyle style` does, and log every row to results.jsonl as it ends.

Resumable: a row whose last logged state is ok (and whose files are all there) is skipped, as is one that
failed unless `retry_failed`; a Ctrl-C stops after the line being written, keeping every result so far.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from restyle.batch.manifest import Request, Row
from restyle.errors import RestyleError

log = logging.getLogger("restyle")

RESULTS_FILE = "results.jsonl"
OnRecord = Callable[[dict[str, Any]], None]


@dataclass
class BatchOptions:
    """How a batch runs; every field has a default."""

    max_batch: int = 8  # images denoised in one run; 1 runs every row alone
    window: int = 16  # rows read and prepared before the prepared ones are grouped by key and denoised
    retry_failed: bool = False  # run rows again whose last attempt failed
    mask_params: Any = None  # MaskParams for every row (None: the defaults); cells override them
    results_dir: Path | None = None  # results.jsonl for a remote (URI) output; None: see results_folder


@dataclass
class Summary:
    """What a run did: rows ok / failed / skipped, images made and the time it took."""

    total: int = 0
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    images: int = 0  # images denoised by this run (skipped rows make none)
    seconds: float = 0.0
    interrupted: bool = False  # stopped by Ctrl-C: the rows not logged run on the next run
    results: str = ""  # the results file

    @property
    def done(self) -> int:
        return self.ok + self.failed + self.skipped

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    @property
    def rows_per_s(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "seconds": round(self.seconds, 3),
            "images_per_s": round(self.images_per_s, 3),
            "rows_per_s": round(self.rows_per_s, 3),
        }


def state_of(record: dict[str, Any]) -> str:
    """A logged row's own state: ok or failed (a skipped line carries the state it was skipped for)."""
    return str(record.get("was") or record.get("status"))


def output_files(record: dict[str, Any]) -> list[str]:
    """Every file a logged ok row wrote: its images, grid, mask and sidecar (names in the output folder)."""
    files = record.get("files") or {}
    return [*files.get("images", []), *(files[k] for k in ("grid", "mask", "sidecar") if files.get(k))]


class ResultsLog:
    """results.jsonl: one JSON line per row and attempt, each written whole; a key's last line is its state.

    Opening it cuts a torn last line (a crash mid-write) and takes an exclusive lock: one run per folder.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            import fcntl

            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # no advisory locks on this platform: one run per folder is on the user
            pass
        except BlockingIOError:
            os.close(self._fd)
            raise RestyleError(
                f"{path}: another restyle batch is writing here; wait for it or pick another --output",
                field="output",
            ) from None
        self.latest: dict[str, dict[str, Any]] = self._read()  # under the lock: a refused run changes nothing

    def _read(self) -> dict[str, dict[str, Any]]:
        if not self.path.exists():
            return {}
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):  # a line cut short by a crash: it never happened
            data = data[: data.rfind(b"\n") + 1]
            os.truncate(self.path, len(data))
            log.warning("%s: dropped a torn last line", self.path)
        latest: dict[str, dict[str, Any]] = {}
        for n, line in enumerate(data.decode("utf-8").splitlines(), start=1):
            try:
                record = json.loads(line)
                latest[str(record["key"])] = record
            except (ValueError, KeyError, TypeError) as err:
                raise RestyleError(f"{self.path}:{n}: not a results line ({err})", field="output") from err
        return latest

    def append(self, record: dict[str, Any]) -> None:
        """Write one line whole and flush it to disk before going on."""
        data = (json.dumps(record, ensure_ascii=False, default=str) + "\n").encode("utf-8")
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        os.fsync(self._fd)
        self.latest[str(record["key"])] = record

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


@dataclass
class _Job:
    """A row read, masked and cropped, waiting for its denoising run."""

    row: Row
    request: Request
    photo: Any  # PIL RGB
    prepared: Any  # Prepared
    mask_result: Any  # MaskResult | None
    prepare_s: float


def plan_batches(
    jobs: Iterable[Any], max_batch: int, key: Callable[[Any], Any] | None = None
) -> list[list[Any]]:
    """Jobs grouped by their Prepared key (first seen first), each group cut into runs of at most
    `max_batch` images; a job with more images than that runs alone.

    Args:
        jobs: _Job-likes with `.prepared.key` and `.prepared.num_images`.
        max_batch: images per run.
        key: the grouping key (default: the job's Prepared key).

    Returns:
        The runs, in order.
    """
    groups: dict[Any, list[Any]] = {}
    for job in jobs:
        groups.setdefault(key(job) if key else job.prepared.key, []).append(job)
    runs: list[list[Any]] = []
    for group in groups.values():
        current: list[Any] = []
        images = 0
        for job in group:
            n = job.prepared.num_images
            if current and images + n > max_batch:
                runs.append(current)
                current, images = [], 0
            current.append(job)
            images += n
        runs.append(current)
    return runs


class RowWork:
    """The work of rows on one engine, without the results file: read, mask and crop each row, denoise
    waiting rows of one key together, save each row's files into `out`, and hand every row's results line
    to `emit` as it ends. `earlier(key)` is the key's last logged line (its stale images are removed).

    BatchRunner uses it in this process; the Ray Data actors (restyle.batch.ray) use it on their engines.
    """

    def __init__(
        self,
        engine: Any,
        out: Any,  # a folder, a URI, or a restyle.batch.storage.Destination
        options: BatchOptions,
        emit: OnRecord,
        earlier: Callable[[str], dict[str, Any] | None],
    ) -> None:
        from restyle.batch.storage import Destination

        self.engine = engine
        self.dest = out if isinstance(out, Destination) else Destination(out)
        self.options = options
        self.emit = emit
        self.earlier = earlier
        self._staging: Path | None = None  # a local folder for a remote destination's files

    @property
    def staging(self) -> Path:
        """Where a row's files are written: the output folder itself, or (remote output) a local temporary
        folder they are uploaded from."""
        if self.dest.folder is not None:
            return self.dest.folder
        if self._staging is None:
            import tempfile

            self._staging = Path(tempfile.mkdtemp(prefix="restyle-batch-"))
        return self._staging

    def close(self) -> None:
        """Remove the staging folder (remote output)."""
        if self._staging is not None:
            import shutil

            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None

    def load(self, rows: list[Row]) -> None:
        """Load the models before the first row: a model that cannot load fails the run, not each row."""
        if rows:
            _ = self.engine.inpainter
        if any("garment" in row.cells for row in rows):
            _ = self.engine.segmenter

    def run(self, rows: Iterable[Row]) -> None:
        """Every row, `window` rows at a time: read and prepared, then the prepared ones denoised in runs of
        one key. A row's batch mates depend only on the row order and the window (the Ray actors take
        `window` rows per task, so they group rows as this does). KeyboardInterrupt passes through."""
        waiting: list[_Job] = []
        taken = 0
        for row in rows:
            job = self.prepare(row)
            waiting += [job] if job else []
            taken += 1
            if taken == self.options.window:
                self.flush(waiting)
                waiting, taken = [], 0
        self.flush(waiting)

    def prepare(self, row: Row) -> _Job | None:
        """Read, mask and crop one row; a bad row is logged failed here (None)."""
        from restyle.batch.storage import read_source
        from restyle.images import load_image, load_mask

        started = time.perf_counter()
        try:
            request = row.request(self.engine.inpainter.family.mode, self.options.mask_params)
            photo = load_image(read_source(request.photo, field="photo"), field="photo")
            mask = (
                load_mask(read_source(request.mask, field="mask"), size=photo.size, field="mask")
                if request.mask
                else None
            )
            prepared, mask_result = self.engine.prepare(
                photo, request.params, garment=request.garment, mask=mask, mask_params=request.mask_params
            )
        except Exception as err:  # a bad row fails alone, with its message
            self.fail(row, err, time.perf_counter() - started)
            return None
        return _Job(row, request, photo, prepared, mask_result, time.perf_counter() - started)

    def flush(self, jobs: list[_Job]) -> None:
        for run in plan_batches(jobs, self.options.max_batch):
            self.denoise(run)

    def denoise(self, run: list[_Job]) -> None:
        """Denoise one run of one key; a failed run of several rows is retried row by row."""
        started = time.perf_counter()
        try:
            results = self.engine.inpainter.run_batch([job.prepared for job in run])
        except Exception as err:
            if len(run) > 1:
                log.warning("a batch of %d rows failed (%s); running them one by one", len(run), err)
                for job in run:
                    self.denoise([job])
                return
            self.fail(run[0].row, err, run[0].prepare_s + time.perf_counter() - started)
            return
        run_s = time.perf_counter() - started
        for job, result in zip(run, results, strict=True):
            finish_started = time.perf_counter()
            try:
                self.finish(job, result, len(run), job.prepare_s + run_s)
            except Exception as err:
                self.fail(job.row, err, job.prepare_s + run_s + time.perf_counter() - finish_started)

    def finish(self, job: _Job, result: Any, batch: int, elapsed_s: float) -> None:
        """Score and save one row's result, drop its earlier attempt's other images, log it ok."""
        from restyle.eval.rank import color_swatch
        from restyle.outputs import save_result

        started = time.perf_counter()
        self.engine.score(result, color=job.request.color)
        key = job.row.key
        sidecar = save_result(result, job.photo, self.staging, stem=key)
        images = [item["file"] for item in sidecar["images"]]
        self.dest.publish(self.staging, [*images, sidecar["grid"], sidecar["mask"], f"{key}.json"])
        self._drop_stale(key, set(images))
        has_target = color_swatch(job.request.color) is not None
        mres = job.mask_result
        self.emit(
            record(
                job.row,
                "ok",
                files={"images": images, "grid": sidecar["grid"], "mask": sidecar["mask"]}
                | {"sidecar": f"{key}.json"},
                seeds=list(result.seeds),
                mask_area=round(mres.area if mres else _area(result.mask), 5),
                mask_confidence=round(mres.confidence, 4) if mres else None,
                color_delta_e=[s.get("color_delta_e") for s in result.scores] if has_target else None,
                batch=batch,
                elapsed_s=round(elapsed_s + time.perf_counter() - started, 3),
            )
        )

    def _drop_stale(self, key: str, keep: set[str]) -> None:
        """Images an earlier attempt of this key wrote that this one did not (other seeds)."""
        earlier = self.earlier(key) or {}
        for name in (earlier.get("files") or {}).get("images", []):
            if name not in keep:
                self.dest.remove(name)

    def fail(self, row: Row, err: Exception, elapsed_s: float) -> None:
        if not isinstance(err, RestyleError):  # not the row's fault as far as we know: keep the trace
            log.warning("row %s (%s) failed", row.key, row.source, exc_info=err)
        message = str(err) or type(err).__name__
        self.emit(
            record(
                row,
                "failed",
                error=message,
                field=getattr(err, "field", None),
                error_type=type(err).__name__,
                elapsed_s=round(elapsed_s, 3),
            )
        )


def record(row: Row, status: str, **values: Any) -> dict[str, Any]:
    """One results line; every line has every field (None where it does not apply)."""
    line: dict[str, Any] = dict.fromkeys(RECORD_FIELDS)
    line.update(key=row.key, line=row.line, photo=row.photo, status=status, color=row.cells.get("color"))
    line.update(values, time=datetime.now(UTC).isoformat(timespec="seconds"))
    return line


class BatchRunner:
    """Runs rows through one Restyler into one output folder (see the module's docstring).

    The results file, resume and the summary are here; the rows' work is `RowWork`'s (`_execute`, which
    restyle.batch.ray replaces to run it on Ray Data actors).
    """

    def __init__(
        self,
        engine: Any,
        out: str | Path,
        options: BatchOptions | None = None,
        *,
        on_record: OnRecord | None = None,
    ) -> None:
        from restyle.batch.storage import Destination

        self.engine = engine
        self.dest = Destination(out)
        self.out = self.dest.folder if self.dest.folder is not None else Path(".")  # a local output folder
        self.options = options or BatchOptions()
        self.on_record = on_record  # called after each logged line (progress; may raise KeyboardInterrupt)
        self.summary = Summary()
        self._log: ResultsLog | None = None

    def run(self, rows: list[Row]) -> Summary:
        """Run every row not done yet; Ctrl-C (KeyboardInterrupt) stops cleanly.

        Args:
            rows: the manifest's rows (keys unique).

        Returns:
            The Summary (`interrupted` when stopped early).
        """
        if self.options.max_batch < 1 or self.options.window < 1:
            raise RestyleError("max_batch and window: must be at least 1", field="max_batch")
        self.dest.prepare()
        state = self.results_folder()
        state.mkdir(parents=True, exist_ok=True)
        local = state / RESULTS_FILE
        fresh = self.dest.remote and not (local.is_file() and local.stat().st_size)
        # a run from another folder or machine: the store's copy says where this output stands
        if fresh and self.dest.fetch(RESULTS_FILE, local):
            log.info("results: started from the copy in %s", self.dest.where(RESULTS_FILE))
        self._log = ResultsLog(local)
        self.summary = Summary(total=len(rows), results=str(self._log.path))
        started = time.perf_counter()
        try:
            todo = [row for row in rows if not self._skip(row)]
            if todo:
                self._execute(todo)
        except KeyboardInterrupt:
            self.summary.interrupted = True
        finally:
            self.summary.seconds = time.perf_counter() - started
            if (
                self.dest.remote
            ):  # the manifest beside the images too, under the lock (the local one is the log)
                self._copy_results()
            self._log.close()
        return self.summary

    def _copy_results(self) -> None:
        assert self._log is not None
        where = self.dest.where(RESULTS_FILE)
        try:
            self.dest.copy_in(self._log.path, RESULTS_FILE)
        except (OSError, KeyboardInterrupt) as err:  # the local log has it all: say so, keep the summary
            log.warning("results: could not copy %s to %s (%s)", self._log.path, where, err)
            self.summary.results += f" (not copied to {where}: {type(err).__name__})"
            return
        self.summary.results += f" (copied to {where})"

    def results_folder(self) -> Path:
        """Where results.jsonl is kept and locked: the output folder; for a remote output (an object store
        cannot append or lock), `options.results_dir`, else a folder named after the URI under
        ./.restyle-batch/. A run that finds no log there starts from the copy in the store, so a re-run from
        another folder or machine resumes too."""
        if self.dest.folder is not None:
            return self.dest.folder
        if self.options.results_dir is not None:
            return Path(self.options.results_dir)
        import hashlib
        import re

        assert self.dest.uri is not None
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", self.dest.uri).strip("_")[:80]
        return Path(".restyle-batch") / f"{name}-{hashlib.sha256(self.dest.uri.encode()).hexdigest()[:10]}"

    def _execute(self, rows: list[Row]) -> None:
        """The rows not done yet, here: one engine, lines written as each row ends."""
        assert self._log is not None
        work = RowWork(self.engine, self.dest, self.options, self._write, self._log.latest.get)
        try:
            work.load(rows)
            work.run(rows)
        finally:
            work.close()

    def _skip(self, row: Row) -> bool:
        """Log and skip a row done before (ok with its files there; failed, unless retrying)."""
        assert self._log is not None
        last = self._log.latest.get(row.key)
        if last is None:
            return False
        was = state_of(last)
        if was == "ok" and self.dest.exist(output_files(last)):
            reason = "done in an earlier run"
        elif was == "failed" and not self.options.retry_failed:
            reason = "failed in an earlier run (--retry-failed runs it again)"
        else:
            return False
        self._write({**last, "status": "skipped", "was": was, "reason": reason, "elapsed_s": 0.0})
        return True

    def _write(self, line: dict[str, Any]) -> None:
        assert self._log is not None
        self._log.append(line)
        status = line["status"]
        self.summary.ok += status == "ok"
        self.summary.failed += status == "failed"
        self.summary.skipped += status == "skipped"
        if status == "ok":
            self.summary.images += len(line["files"]["images"])
        if self.on_record is not None:
            self.on_record(line)


# every results line has these, in this order
_ROW = ("key", "line", "photo", "status", "was", "reason", "files", "seeds", "mask_area", "mask_confidence")
_RUN = ("color", "color_delta_e", "batch", "elapsed_s", "error", "field", "error_type", "time")
RECORD_FIELDS = (*_ROW, *_RUN)


def _area(mask: Any) -> float:
    """The fraction of a given mask that will be repainted (mask > 0)."""
    import numpy as np

    values = np.asarray(mask.convert("L"))
    return float(np.count_nonzero(values)) / max(values.size, 1)


def run_batch(
    engine: Any, rows: list[Row], out: str | Path, options: BatchOptions | None = None, **kwargs: Any
) -> Summary:
    """Run `rows` into `out` (see BatchRunner). Returns the Summary."""
    return BatchRunner(engine, out, options, **kwargs).run(rows)


__all__ = [
    "RESULTS_FILE",
    "BatchOptions",
    "BatchRunner",
    "ResultsLog",
    "RowWork",
    "Summary",
    "record",
    "run_batch",
]
