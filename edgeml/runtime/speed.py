"""How fast the edge and the cloud really compute: psutil's CPU load, the measured speed
relative to the profile, and the emulated edge slowdown (applied by sleeping)."""

from __future__ import annotations

import time

import psutil

from edgeml.partition.cost import CostModel

__all__ = ["PACES", "CpuLoad", "Pacer", "SpeedTracker"]


class CpuLoad:
    """Background CPU load the edge core sees, from psutil (the env's ``edge_load``).

    The cost model slows edge compute by ``1 + load``. Two psutil readings, the larger wins:

    * run-queue demand: with ``D`` runnable threads on ``n`` cores (1-minute load average)
      a thread gets ``n / D`` of a core, so ``load = D / n - 1``: slow to react, but it
      sees contention beyond 100% busy;
    * busy cores: other processes' busy cores beyond the ``n - 1`` the edge does not use,
      ``load = others - (n - 1)`` (on a one-core device: the share others take): quick,
      but it saturates at 1.
    """

    def __init__(self) -> None:
        self._proc = psutil.Process()
        self._n = psutil.cpu_count() or 1
        psutil.cpu_percent(None)
        self._proc.cpu_percent(None)

    def sample(self) -> float:
        busy = psutil.cpu_percent(None) / 100.0 * self._n
        own = self._proc.cpu_percent(None) / 100.0
        by_busy = busy - own - (self._n - 1)
        by_queue = psutil.getloadavg()[0] / self._n - 1.0
        return round(max(0.0, by_busy, by_queue), 3)


#: How the emulated edge's slowness is applied (:class:`Pacer`).
PACES = ("measured", "profile")


class Pacer:
    """The emulated edge's slowness, applied by sleeping after the real compute.

    ``measured``: sleep ``edge_slowdown - 1`` times the measured compute, so whatever slows
    this machine (other processes, a slower CPU than the profile's) slows the emulated edge
    as much, and the daemon plans with that load (:class:`CpuLoad`, the measured speed). One
    edge on a machine of its own, as ``edgeml demo`` runs it.

    ``profile``: sleep until the work has taken what the cost model says it takes on the
    emulated edge (``edge_slowdown`` x the profile), so the edge runs at its profile
    whatever this machine is doing, and its load is 0. A fleet of devices has a core each,
    while ``edgeml fleet`` runs all of them on this machine's cores; measured pacing would
    multiply their contention by the slowdown (24 x on the default edge). Real compute longer
    than the target is not hidden: nothing is slept (``slowdown_sleep`` 0) and it is late.
    """

    def __init__(self, cost: CostModel, codec: str, pace: str = "measured") -> None:
        if pace not in PACES:
            raise ValueError(f"pace: {pace!r}; allowed: {', '.join(PACES)}")
        self.cost, self.codec, self.pace = cost, codec, pace

    @property
    def real_load(self) -> bool:
        """Whether this machine's load and speed are the emulated edge's."""
        return self.pace == "measured"

    def _sleep(self, compute_s: float, target_ms: float) -> float:
        if self.pace == "measured":
            extra = max(compute_s, 0.0) * (self.cost.edge_slowdown - 1.0)
        else:
            extra = max(target_ms / 1e3 - compute_s, 0.0)
        if extra > 0:
            time.sleep(extra)
        return extra

    def after_run(self, compute_s: float, s: int, e: int, stop: int | None, tau: float) -> float:
        """Sleep after the edge's segment of action ``(s, e, tau)`` (``compute_s`` includes
        the encoding of an offload): answered at exit ``stop``, or offloaded (``None``).
        Returns the sleep (s)."""
        target = 0.0
        if self.pace == "profile":
            b = self.cost.breakdown(s, e, e if stop is None else stop, tau >= 1.0, self.codec)
            target = b.edge_ms + b.encode_ms
        return self._sleep(compute_s, target)

    def after_fallback(self, compute_s: float, s: int, k: int) -> float:
        """Sleep after a local fallback from split ``s`` to exit ``k``; returns the sleep (s)."""
        target = self.cost.local_finish_ms(s, k) if self.pace == "profile" else 0.0
        return self._sleep(compute_s, target)


class SpeedTracker:
    """How fast edge and cloud really compute, relative to the profile (1.0 = as profiled).

    Ratios of running sums (EWMA) over the inputs so far, measured over profiled compute:
    on the edge (blocks and heads, before the emulated slowdown) and in the cloud (decode
    and blocks, as the server reports them). Summing before dividing weighs each input by
    its work. Inputs that ran no block on the edge (split 0) leave the edge ratio alone:
    their encoding takes microseconds dominated by fixed overheads, 5x its profile, and a
    stream of them once drove the ratio (and so the edge load) to 5. Logged with every
    input as known *before* it, so a prediction that uses them stays causal.

    The edge ratio also feeds the edge load the policy sees. In the simulator that load
    means "edge compute runs ``1 + load`` times the profile", and a core that idles between
    inputs, as a camera's does, runs each one from cold caches: on the development VM the
    daemon measured 1.2-1.5x the back-to-back profile with nothing else running, which
    psutil cannot see and which made the policy pick edge work that missed the deadline.
    """

    def __init__(self, cost: CostModel, codec: str, alpha: float = 0.1) -> None:
        self.cost, self.codec, self.alpha = cost, codec, alpha
        self._edge = [0.0, 0.0]  # EWMA of measured ms, of profiled ms
        self._cloud = [0.0, 0.0]

    @staticmethod
    def _ratio(acc: list[float]) -> float:
        return min(max(acc[0] / acc[1], 0.1), 20.0) if acc[1] > 0 else 1.0

    @property
    def edge(self) -> float:
        return self._ratio(self._edge)

    @property
    def cloud(self) -> float:
        return self._ratio(self._cloud)

    def _mix(self, acc: list[float], measured: float, profiled: float) -> None:
        if acc[1] == 0:
            acc[0], acc[1] = measured, profiled
        else:
            acc[0] += self.alpha * (measured - acc[0])
            acc[1] += self.alpha * (profiled - acc[1])

    def update(self, s: int, e: int, tau: float, stop: int, lat: dict[str, float]) -> None:
        b = self.cost.breakdown(s, e, stop, tau >= 1.0, self.codec, 0.0)
        edge_prof = b.edge_ms / self.cost.edge_slowdown
        if edge_prof > 0:  # blocks ran; encoding alone is fixed overheads, not the core's speed
            self._mix(self._edge, lat["edge_compute"], edge_prof)
        served = lat["cloud_compute"] + lat["cloud_decode"]
        if b.offloaded and served > 0:
            self._mix(self._cloud, served, b.cloud_ms + b.decode_ms)
