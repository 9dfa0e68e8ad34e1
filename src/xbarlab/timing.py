"""Wall-clock timing that counts queued device work: a synchroniser per device and a stage clock.

CUDA runs kernels asynchronously: a call returns once its kernels are queued, so a clock read right after it
measures the launch and charges the computation to whichever later stage first waits for a result. Every timed
region in xbarlab (the forward benchmark, the runner's and the trials' stage timings) therefore ends with
:func:`device_synchronizer`'s call, a no-op on the CPU.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

__all__ = ["StageClock", "device_synchronizer"]


def device_synchronizer(device: str | torch.device) -> Callable[[], None]:
    """A function that waits until ``device`` has finished its queued work (a no-op on the CPU and ``meta``)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return lambda: torch.cuda.synchronize(dev)
    return lambda: None


class StageClock:
    """Seconds per named stage: :meth:`lap` waits for the device, then charges the time since the last lap.

    A stage lapped twice accumulates. ``timings`` maps stage names to seconds.
    """

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self._sync = device_synchronizer(device)
        self._last = time.perf_counter()
        self.timings: dict[str, float] = {}

    def restart(self) -> None:
        """Start the next stage now (time since the last lap is charged to no stage)."""
        self._sync()
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        """Wait for the device, then add the seconds since the last lap (or restart) to stage ``name``."""
        self._sync()
        now = time.perf_counter()
        self.timings[name] = self.timings.get(name, 0.0) + now - self._last
        self._last = now
