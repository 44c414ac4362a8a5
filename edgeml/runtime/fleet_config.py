"""``edgeml fleet``'s settings (:mod:`.fleet_live` runs them, :mod:`.fleet_twin` simulates
them)."""

from __future__ import annotations

from dataclasses import dataclass

from edgeml.runtime.demo import LiveConfig

__all__ = ["FleetConfig"]


@dataclass(kw_only=True)
class FleetConfig(LiveConfig):
    """Everything ``edgeml fleet`` sets (defaults: the CLI's)."""

    edges: int = 8
    rounds: int = 3
    traces: str | None = None  # a directory of trace CSVs (default: the shared traces)
    families: tuple[str, ...] | None = None  # keep only these trace families (None: all)
    max_batch: int = 16
    max_wait_us: int = 1000
    startup_timeout_s: float = 120.0
    # the emulated cloud against the profile; with pace "profile" the server is paced to it
    cloud_speedup: float = 1.0

    def __post_init__(self) -> None:
        from edgeml.decision.scenario import Scenario
        from edgeml.errors import InputError

        for name in ("edges", "rounds", "inputs"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name}: must be >= 1, got {getattr(self, name)}")
        Scenario(cloud_speedup=self.cloud_speedup)  # checked as the scenario checks it
        if self.families is not None:  # a stored run's JSON gives a list
            self.families = tuple(self.families)
