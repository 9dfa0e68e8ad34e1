"""Executors: run trials in-process, in a pool of worker processes, or on a Ray cluster.

Every executor takes ``(hash, config)`` pairs and yields ``(hash, outcome)`` as trials finish (in completion
order); ``outcome`` is what :func:`xbarlab.experiments.trial.run_trial` returns. The driver (the sweep) writes
each outcome to the store right away, so an interruption loses at most the trials in flight.

* :class:`LocalExecutor`: in the calling process, one trial after the other.
* :class:`ProcessExecutor`: ``concurrent.futures.ProcessPoolExecutor`` with the ``spawn`` start method;
  each worker process loads the model and data once (per-process cache) and runs with
  ``threads`` torch threads (default: CPU cores / workers).
* :class:`RayExecutor`: Ray tasks (``pip install 'xbarlab[ray]'``). The driver puts the model weights and
  the data sets in the Ray object store once; workers install them in their cache on first use. A local Ray
  instance is started unless ``address`` is given (``"auto"`` or ``"ray://host:10001"``).

Trials draw all randomness from their chip seed and set their own torch seed, so the same sweep gives the
same metrics on every executor.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from xbarlab.experiments.trial import _data_key, _model_key, install_payload, run_trial, shared_payloads

__all__ = [
    "EXECUTORS",
    "Executor",
    "LocalExecutor",
    "ProcessExecutor",
    "RayExecutor",
    "check_executor",
    "make_executor",
    "trial_gpus",
    "trial_resources",
]

Job = tuple[str, Mapping[str, Any]]


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(max(1, int(threads)))


class Executor(ABC):
    """Runs trials; subclasses implement :meth:`run`."""

    name = "executor"

    def __init__(self, workers: int = 1, threads: int | None = None) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers: invalid value {workers!r}; allowed: an integer >= 1")
        self.workers = workers
        self.threads = threads if threads is not None else max(1, _cpu_count() // workers)

    @abstractmethod
    def run(self, jobs: Iterable[Job]) -> Iterator[tuple[str, dict[str, Any]]]:
        """Yield ``(hash, outcome)`` for every job as it finishes."""

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op for in-process executors
        """Release workers (idempotent)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> str:
        """``name (workers × threads)`` for summaries."""
        return f"{self.name} ({self.workers} worker{'s' if self.workers != 1 else ''} × {self.threads} threads)"


class LocalExecutor(Executor):
    """Runs every trial in the calling process (``threads`` torch threads, default all cores)."""

    name = "local"

    def __init__(self, workers: int = 1, threads: int | None = None) -> None:
        if workers != 1:
            raise ValueError(f"workers: invalid value {workers!r} for the local executor; allowed: 1")
        super().__init__(1, threads)

    def run(self, jobs: Iterable[Job]) -> Iterator[tuple[str, dict[str, Any]]]:
        _set_threads(self.threads)
        for trial_hash, config in jobs:
            yield trial_hash, run_trial(config)


def _exit_with_parent(parent_pid: int) -> None:
    """End this worker when the driver dies (e.g. SIGKILL): a pool worker would otherwise wait forever."""
    try:  # Linux: the kernel delivers SIGKILL when the parent exits
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass

    def watch() -> None:  # portable fallback: poll the parent pid
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                os._exit(1)

    if os.getppid() != parent_pid:
        os._exit(1)
    threading.Thread(target=watch, name="xbarlab-parent-watch", daemon=True).start()


def _init_process_worker(threads: int, parent_pid: int) -> None:
    _exit_with_parent(parent_pid)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    os.environ.setdefault("MKL_NUM_THREADS", str(threads))
    _set_threads(threads)


class ProcessExecutor(Executor):
    """``workers`` spawned processes on this machine; at most ``2 × workers`` trials are queued at a time."""

    name = "process"

    def __init__(self, workers: int = 2, threads: int | None = None) -> None:
        super().__init__(workers, threads)
        self._pool: Any = None

    def run(self, jobs: Iterable[Job]) -> Iterator[tuple[str, dict[str, Any]]]:
        import multiprocessing
        from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

        self._pool = ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_process_worker,
            initargs=(self.threads, os.getpid()),
        )
        queue = iter(jobs)
        running: dict[Future[dict[str, Any]], str] = {}
        try:
            while True:
                while len(running) < 2 * self.workers:
                    job = next(queue, None)
                    if job is None:
                        break
                    running[self._pool.submit(run_trial, dict(job[1]))] = job[0]
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    yield running.pop(future), future.result()
        finally:
            self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def _ray_trial(config: Mapping[str, Any], threads: int, *payloads: Mapping[str, Any]) -> dict[str, Any]:
    """Ray task body: install the shared model/data payloads (once per worker), then run the trial."""
    for payload in payloads:
        install_payload(payload)
    _set_threads(threads)
    return run_trial(config)


class RayExecutor(Executor):
    """Ray tasks, one CPU each; ``address`` None starts a local instance with ``workers`` CPUs.

    ``workers`` bounds the trials in flight (default with an address: the cluster's CPU count).
    """

    name = "ray"

    def __init__(self, workers: int | None = None, threads: int | None = None, address: str | None = None) -> None:
        try:
            import ray
        except ImportError as exc:
            raise ImportError("executor 'ray' needs Ray: pip install 'xbarlab[ray]' (or 'ray[default]')") from exc
        self._ray = ray
        self._started = False
        if not ray.is_initialized():
            if address:
                ray.init(address=address, logging_level=logging.WARNING)
            else:
                ray.init(num_cpus=workers or _cpu_count(), include_dashboard=False, logging_level=logging.WARNING)
            self._started = True
        if workers is None:
            workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        super().__init__(workers, threads if threads is not None else 1)

    def run(self, jobs: Iterable[Job]) -> Iterator[tuple[str, dict[str, Any]]]:
        ray = self._ray
        job_list = list(jobs)
        payloads = shared_payloads([config for _, config in job_list])
        refs = {key: ray.put(payload) for key, payload in payloads.items()}  # once per sweep
        remote = ray.remote(num_cpus=1, max_retries=0)(_ray_trial)
        queue = iter(job_list)
        running: dict[Any, str] = {}
        try:
            while True:
                while len(running) < 2 * self.workers:
                    job = next(queue, None)
                    if job is None:
                        break
                    trial_hash, config = job
                    needed = [
                        refs[_model_key(config["model"])],
                        refs[_data_key(config["data"], "train")],
                        refs[_data_key(config["data"], "test")],
                    ]
                    task = remote.options(**trial_resources(config))
                    running[task.remote(dict(config), self.threads, *needed)] = trial_hash
                if not running:
                    break
                finished, _ = ray.wait(list(running), num_returns=1)
                for ref in finished:
                    yield running.pop(ref), ray.get(ref)
        finally:
            for ref in running:
                ray.cancel(ref, force=True)

    def close(self) -> None:
        if self._started and self._ray.is_initialized():
            self._ray.shutdown()
            self._started = False


EXECUTORS = ("local", "process", "ray")


def trial_gpus(config: Mapping[str, Any]) -> int:
    """GPUs a trial asks Ray for: 1 when its ``device`` is CUDA (``cuda``, ``cuda:0``), else 0."""
    return 1 if str(config.get("device", "cpu")).startswith("cuda") else 0


def trial_resources(config: Mapping[str, Any]) -> dict[str, int]:
    """The Ray resources of one trial: one CPU, and one GPU when its ``device`` is CUDA (none for a CPU trial)."""
    return {"num_cpus": 1, "num_gpus": trial_gpus(config)}


def check_executor(name: str, *, allowed: tuple[str, ...] = EXECUTORS, address: str | None = None) -> None:
    """Refuse an executor that cannot run here, before anything is written (unknown name, Ray not installed).

    Messages name the option: ``--executor: invalid value 'x'; allowed: local, process, ray``.
    """
    import importlib.util

    if name not in allowed:
        raise ValueError(f"--executor: invalid value {name!r}; allowed: {', '.join(allowed)}")
    if name == "ray" and importlib.util.find_spec("ray") is None:
        raise ValueError("--executor ray: Ray is not installed; allowed: pip install 'xbarlab[ray]', or local, process")
    if address is not None and name != "ray":
        raise ValueError("--address: only with --executor ray")


def make_executor(
    name: str, *, workers: int | None = None, threads: int | None = None, address: str | None = None
) -> Executor:
    """An executor by name (``local``, ``process``, ``ray``); errors name the allowed values."""
    if name == "local":
        return LocalExecutor(1 if workers is None else workers, threads)
    if name == "process":
        return ProcessExecutor(workers or _cpu_count(), threads)
    if name == "ray":
        return RayExecutor(workers, threads, address)
    raise ValueError(f"executor: invalid value {name!r}; allowed: {', '.join(EXECUTORS)}")
