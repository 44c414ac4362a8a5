"""The one :class:`Scenario`: every parameter of a run, simulated or live, defined once.

The simulator, the baselines, the edge daemon, ``demo`` and ``emulate`` read their scenario
from here, a policy file records the one it was trained on, and the CLI's flags are
generated from the dataclass (:func:`add_scenario_flags`), with the help text of each
field's ``:param:`` line below and its default, so no default is written twice.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from edgeml.decision.action import TAUS
from edgeml.errors import InputError

#: What can run the edge's blocks (see :meth:`edgeml.bundle.Manifest.edge_runtime`).
EDGE_RUNTIMES = ("onnx", "torch")
EDGE_PRECISIONS = ("fp32", "int8")

__all__ = [
    "LoadConfig",
    "Scenario",
    "StreamConfig",
    "add_scenario_flags",
    "families_arg",
    "scenario_diff",
    "scenario_from_args",
]


@dataclass(frozen=True)
class StreamConfig:
    """Regime process of the input difficulty.

    :param dwell_s: mean time a difficulty level lasts (geometric in frames).
    :param neighbour_prob: chance a level change goes to an adjacent level (else uniform).
    """

    dwell_s: float = 3.0
    neighbour_prob: float = 0.5

    def __post_init__(self) -> None:
        if not self.dwell_s > 0:
            raise ValueError(f"dwell_s: must be > 0, got {self.dwell_s}")
        if not 0.0 <= self.neighbour_prob <= 1.0:
            raise ValueError(f"neighbour_prob: must be in [0, 1], got {self.neighbour_prob}")


@dataclass(frozen=True)
class LoadConfig:
    """Background load on the edge core: idle/busy regimes with geometric dwell.

    :param busy_share: long-run share of time in the busy regime.
    :param dwell_s: mean duration of a regime.
    :param idle: (low, high) of the uniform load level drawn for an idle regime.
    :param busy: (low, high) of the uniform load level drawn for a busy regime.
    :param jitter: std of the per-input noise around the regime's level.
    """

    busy_share: float = 0.3
    dwell_s: float = 5.0
    idle: tuple[float, float] = (0.0, 0.1)
    busy: tuple[float, float] = (0.25, 1.0)
    jitter: float = 0.03

    def __post_init__(self) -> None:
        if not 0.0 <= self.busy_share <= 1.0:
            raise ValueError(f"busy_share: must be in [0, 1], got {self.busy_share}")
        if not self.dwell_s > 0:
            raise ValueError(f"dwell_s: must be > 0, got {self.dwell_s}")
        object.__setattr__(self, "idle", tuple(self.idle))
        object.__setattr__(self, "busy", tuple(self.busy))
        for name in ("idle", "busy"):
            lo, hi = getattr(self, name)
            if not 0.0 <= lo <= hi:
                raise ValueError(f"{name}: need 0 <= low <= high, got {(lo, hi)}")


@dataclass
class Scenario:
    """Every parameter of a run (defaults: ARCHITECTURE.md's scenario).

    :param bundle: bundle directory (None: the shipped default bundle).
    :param traces: trace CSV file or directory (None: the sample shipped with the package).
    :param trace_split: which files of each trace family: train, test or all.
    :param families: keep only these trace families (None: all).
    :param codec: tensor codec on the link (a codec of the bundle's profile).
    :param edge_slowdown: how much slower than the profiling machine the edge computes (24:
        a Raspberry Pi 3B+-class board against an ONNX Runtime core of a current server;
        ``bench/edge_device.py`` derives it).
    :param edge_runtime: what runs the edge's blocks: onnx (ONNX Runtime) or torch (None:
        onnx when the bundle has its ONNX files); the edge plans with that runtime's profile.
    :param edge_precision: fp32, or int8 (the quantised ONNX blocks, their own profile).
    :param cloud_speedup: how much faster than the profiling machine the cloud computes.
    :param rtt_ms: base round-trip time of the link (assumed by the edge until measured).
    :param call_overhead_ms: mean per-request time of the RPC stack beyond the link (threads
        and framing on both sides; simulator, exponential per call): added to every transfer,
        and so to what the edge measures, as a live edge's estimate only subtracts its ping's
        RTT. 0: an ideal stack; ``edgeml fleet`` calibrates its simulation from its live runs.
    :param deadline_ms: an answer later than this is a miss; also the offload's deadline.
    :param grace_ms: how long past the deadline the edge still waits for the cloud before it
        answers locally (None: as long as the cheapest local answer takes; 0: give up at the
        deadline).
    :param input_rate: inputs per second.
    :param episode_steps: inputs per simulated episode (then truncated).
    :param latency_weight: weight of the latency term of the reward.
    :param latency_cap: the latency term is capped at this many deadlines.
    :param reward: outcome (the answer's real correctness) or expected (its calibration
        probability given level and stop exit: same mean, less noise; for training).
    :param history: measured throughputs kept in the observation.
    :param probe_interval_s: probe the link when nothing was measured for this long.
    :param probe_bytes: size of a throughput probe: it sends the int8 cut closest to it
        (:meth:`~edgeml.partition.cost.CostModel.probe_split`), answered at the last exit,
        and its reply carries the cloud's load as an offload's does.
    :param probe_timeout_s: a probe the link does not carry by then counts as its bytes over
        this time (a censored sample: the link is that slow at most).
    :param stream: the input difficulty regime process (simulator).
    :param load: the edge's background load process (simulator).
    """

    bundle: str | None = None
    traces: str | list[str] | None = None
    trace_split: str = "all"
    families: tuple[str, ...] | None = None
    codec: str = "int8"
    edge_slowdown: float = 24.0
    edge_runtime: str | None = None
    edge_precision: str = "fp32"
    cloud_speedup: float = 1.0
    rtt_ms: float = 40.0
    call_overhead_ms: float = 0.0
    deadline_ms: float = 100.0
    grace_ms: float | None = None
    input_rate: float = 10.0
    episode_steps: int = 300
    latency_weight: float = 0.01
    latency_cap: float = 2.0
    reward: str = "outcome"
    history: int = 4
    probe_interval_s: float = 1.0
    probe_bytes: float = 4000.0
    probe_timeout_s: float = 1.0
    stream: StreamConfig = field(default_factory=StreamConfig)
    load: LoadConfig = field(default_factory=LoadConfig)

    def __post_init__(self) -> None:
        positive = (
            "edge_slowdown", "cloud_speedup", "deadline_ms", "input_rate", "probe_interval_s",
            "probe_bytes", "probe_timeout_s",
        )  # fmt: skip
        for name in positive:
            v = getattr(self, name)
            if not (isinstance(v, int | float) and v > 0 and v != float("inf")):
                raise ValueError(f"{name}: must be > 0 and finite, got {v}")
        for name in ("rtt_ms", "call_overhead_ms", "latency_weight", "latency_cap"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and 0 <= v < float("inf")):
                raise ValueError(f"{name}: must be >= 0 and finite, got {v}")
        if self.grace_ms is not None and not 0 <= self.grace_ms < float("inf"):
            raise ValueError(f"grace_ms: must be >= 0 and finite, or unset; got {self.grace_ms}")
        if self.reward not in ("outcome", "expected"):
            raise ValueError(f"reward: {self.reward!r} not one of outcome, expected")
        if self.edge_runtime not in (None, *EDGE_RUNTIMES):
            raise ValueError(
                f"edge_runtime: {self.edge_runtime!r} not one of {', '.join(EDGE_RUNTIMES)}"
            )
        if self.edge_precision not in EDGE_PRECISIONS:
            raise ValueError(
                f"edge_precision: {self.edge_precision!r} not one of {', '.join(EDGE_PRECISIONS)}"
            )
        if self.trace_split not in ("train", "test", "all"):
            raise ValueError(f"trace_split: {self.trace_split!r} not one of train, test, all")
        if self.episode_steps < 1 or self.history < 1:
            raise ValueError("episode_steps, history: must be >= 1")
        if isinstance(self.stream, dict):
            self.stream = StreamConfig(**self.stream)
        if isinstance(self.load, dict):
            self.load = LoadConfig(**self.load)
        if self.families is not None:
            self.families = tuple(self.families)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; ``None`` paths are resolved to the shipped defaults they mean."""
        d = asdict(self)
        if d["bundle"] is None:
            from edgeml.assets import default_bundle

            d["bundle"] = str(default_bundle())
        if d["traces"] is None:
            from edgeml.assets import ASSETS

            d["traces"] = str(ASSETS / "traces")
        d["taus"] = list(TAUS)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Scenario:
        """The inverse of :meth:`to_dict` (unknown keys, e.g. ``taus``, are ignored)."""
        names = cls.field_names()
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in fields(cls)}


#: Fields that describe where a run's data comes from, not how the world behaves: a policy
#: trained on other traces is not "for another scenario".
DATA_FIELDS = ("bundle", "traces", "trace_split", "families")
#: Fields of training only (the reward's form, the episode length).
TRAINING_FIELDS = ("reward", "episode_steps")


def scenario_diff(trained: Scenario, now: Scenario) -> list[str]:
    """The world fields in which ``now`` differs from ``trained``, as ``name: a -> b``."""
    a, b = asdict(trained), asdict(now)
    skip = {*DATA_FIELDS, *TRAINING_FIELDS}
    return [f"{k}: {a[k]} -> {b[k]}" for k in a if k not in skip and a[k] != b[k]]


# --------------------------------------------------------------------------- CLI flags


def _param_help(cls: type) -> dict[str, str]:
    """``:param name: text`` lines of a class docstring (continuation lines joined)."""
    doc = cls.__doc__ or ""
    out: dict[str, str] = {}
    for m in re.finditer(r":param (\w+):(.*?)(?=\n\s*:param |\Z)", doc, re.S):
        out[m.group(1)] = " ".join(m.group(2).split())
    return out


def _flag(prefix: str, name: str) -> str:
    return "--" + (prefix + name).replace("_", "-")


#: Short names kept for flags users already type.
ALIASES = {
    "trace_split": ("--split",),
    "input_rate": ("--rate",),
    "probe_interval_s": ("--probe-after-s",),
    "edge_runtime": ("--runtime",),
}


def families_arg(text: str) -> tuple[str, ...]:
    """``--families``'s value: comma-separated family names (``belgium4g,fcc``)."""
    return tuple(x for x in text.split(",") if x)


def add_scenario_flags(
    p: argparse.ArgumentParser, skip: tuple[str, ...] = (), **defaults: Any
) -> None:
    """One flag per :class:`Scenario` field not in ``skip`` (nested configs as
    ``--stream-*``/``--load-*``), with the field's help and default (``defaults``
    overrides a default for this command, e.g. ``trace_split="test"`` for ``evaluate``)."""
    group = p.add_argument_group("scenario (every run records it; a policy is trained for one)")
    helps = _param_help(Scenario)
    base = Scenario()
    for f in fields(Scenario):
        if f.name in skip:
            continue
        default = defaults.get(f.name, getattr(base, f.name))
        if dataclasses.is_dataclass(default):
            sub_help = _param_help(type(default))
            for sf in fields(default):
                v = getattr(default, sf.name)
                kw: dict[str, Any] = {"type": float, "default": v, "metavar": sf.name.upper()}
                if isinstance(v, tuple):
                    kw.update(nargs=2, metavar=("LOW", "HIGH"))
                group.add_argument(
                    _flag(f.name + "_", sf.name), dest=f"scenario__{f.name}__{sf.name}",
                    help=f"{f.name}: {sub_help.get(sf.name, '')}", **kw,
                )  # fmt: skip
            continue
        kind: Any = {"int": int, "float": float}.get(type(default).__name__, str)
        if f.name in ("grace_ms",):
            kind = float
        if f.name == "families":
            kind = families_arg
        choices = {
            "reward": ("outcome", "expected"), "trace_split": ("train", "test", "all"),
            "edge_runtime": EDGE_RUNTIMES, "edge_precision": EDGE_PRECISIONS,
        }  # fmt: skip
        group.add_argument(
            _flag("", f.name), *ALIASES.get(f.name, ()), dest=f"scenario__{f.name}",
            type=kind, default=default, choices=choices.get(f.name),
            metavar=None if f.name in choices else f.name.upper(), help=helps.get(f.name, ""),
        )  # fmt: skip


def scenario_from_args(
    args: argparse.Namespace, carried: Sequence[str] | None = None, **overrides: Any
) -> Scenario:
    """The :class:`Scenario` of the flags added by :func:`add_scenario_flags`. ``carried``:
    the fields the command uses; a flag of another field set away from its default is
    refused (a live run does not simulate episodes or background load, say), rather than
    silently ignored."""
    values: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for key, v in vars(args).items():
        if not key.startswith("scenario__"):
            continue
        parts = key.split("__")[1:]
        if len(parts) == 2:
            nested.setdefault(parts[0], {})[parts[1]] = tuple(v) if isinstance(v, list) else v
        else:
            values[parts[0]] = v
    base = Scenario()
    for name, kw in nested.items():
        values[name] = replace(getattr(base, name), **kw)
    values.update(overrides)
    sc = Scenario(**values)
    if carried is not None:
        for f in fields(Scenario):
            keep = f.name in (*carried, *overrides)
            if not keep and getattr(sc, f.name) != getattr(base, f.name):
                flag = f"--{f.name.replace('_', '-')}" + ("-*" if f.name in nested else "")
                raise InputError(
                    f"{flag}: not used by this command (it takes the scenario's "
                    f"{', '.join(carried)}); leave it at its default"
                )
    return sc
