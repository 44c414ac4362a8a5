"""The one latency model of an action; simulator, baselines and runtime checks all use it.

Notation: blocks ``1..N`` with cloud latencies ``B[k]`` (``profile["blocks_ms"]``), exit
heads with latencies ``H[k]`` at blocks ``exits[k]`` (head plus the softmax/max the rule
judges confidence by), codec tables per split ``s``: framed bytes ``Y[s]``, encode
``Enc[s]`` and decode ``Dec[s]`` ms, all measured on this machine; the early-exit rule's
own bookkeeping (``profile["rule_overhead_ms"]``, zeros if absent): ``Os`` per segment run,
``Oc`` per exit passed unevaluated, ``Od`` per evaluated exit; ``Of``, the edge's fixed cost
of an offload beyond the codec's warm encode (``profile["offload_fixed_ms"]`` for torch,
an ONNX edge's own under ``edge_runtimes`` where profiled, else torch's; 0 if absent):
the daemon quantizes and frames each input after an idle gap, from cold caches, and at split
0 that costs several times the back-to-back encode (0.35 ms against 0.06 ms on the
development VM, 4 ms once slowed 12x), which the simulator missed on every offload.

An action ``(s, e, tau)`` whose run stops at exit ``j`` (block ``b = exits[j]``, ``j <= e``;
with ``tau >= 1`` always ``j = e``) evaluates the heads ``K = {e}`` if ``tau >= 1`` (no
early stop), else ``K = {0..j}``; the other exits at blocks ``<= b`` are only checked.
With ``part(lo, hi)`` the cost of running blocks ``lo+1..hi`` under the rule::

    part(lo, hi) = sum B[lo+1..hi] + Os * [hi > lo]
                   + sum over exits k with lo < exits[k] <= hi of (H[k] + Od if k in K else Oc)

    offloaded = b > s                        (stops at or before s: nothing is sent)
    edge_ms   = slow * load * part(0, min(s, b))
    encode_ms = slow * load * (Enc[s] + Of)            if offloaded, else 0
    transfer  = Y[s] * 8 / (mbps * 1e6) s + rtt_ms     if offloaded, else 0
    decode_ms = Dec[s] / speedup                       if offloaded, else 0
    cloud_ms  = part(s, b) / speedup                   if offloaded, else 0
    latency   = edge_ms + encode_ms + transfer + decode_ms + cloud_ms

``slow = edge_slowdown``; ``load = 1 + edge_load`` (extra work sharing the edge core: 1.0
makes everything on the edge take twice as long); ``speedup = cloud_speedup``. 0 Mbps
makes an offloading action infinitely slow. The reply is a few bytes: its time is part of
the RTT.

The runtime's local fallback (an offload that failed or came too late) goes on from split
``s`` on the edge to an exit ``k`` past ``s`` (up to ``e`` if there is one)::

    local_finish(s, k) = slow * load * (sum B[s+1..exits[k]] + H[k])

The edge's ``part`` and ``local_finish`` take ``B`` and ``H`` of the runtime the edge runs
(``edge_runtime``: torch's are the profile's own; an ONNX edge's are the profile's
``edge_runtimes["onnx/fp32"]`` or ``["onnx/int8"]``), the cloud's are always torch's.

Everything that does not depend on the link is precomputed as arrays over
``(split, exit, stop exit, tau_is_one)`` in the constructor, so :meth:`CostModel.latency_ms`
is a handful of lookups (the simulator calls it millions of times) and
:meth:`CostModel.latency_table` gives every action at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from edgeml.decision.scenario import Scenario

__all__ = ["RULE_KEYS", "Breakdown", "CostModel"]

#: Keys of ``profile["rule_overhead_ms"]``, in the order of :attr:`CostModel.rule_ms`.
RULE_KEYS = ("segment", "exit_check", "exit_decide")


@dataclass(frozen=True)
class Breakdown:
    """Where the time of one action goes; ``bytes`` is what crosses the link."""

    edge_ms: float
    encode_ms: float
    bytes: float
    decode_ms: float
    cloud_ms: float
    offloaded: bool

    def transfer_ms(self, bandwidth_mbps: float, rtt_ms: float) -> float:
        """Link time: serialization at ``bandwidth_mbps`` plus one RTT (0 if nothing is sent)."""
        if not self.offloaded:
            return 0.0
        if bandwidth_mbps <= 0:
            return math.inf
        return self.bytes * 8.0 / (bandwidth_mbps * 1e3) + rtt_ms

    def total_ms(self, bandwidth_mbps: float, rtt_ms: float) -> float:
        return (
            self.edge_ms
            + self.encode_ms
            + self.transfer_ms(bandwidth_mbps, rtt_ms)
            + self.decode_ms
            + self.cloud_ms
        )


@dataclass(frozen=True, eq=False)
class CostModel:
    """Latency of actions from a profile; build it with :meth:`from_profile`.

    Tables are numpy arrays: ``blocks_ms`` (N,), ``heads_ms`` (E,) per exit index,
    ``bytes``/``encode_ms``/``decode_ms`` (C, N+1) per codec (order of ``codecs``) and split.
    Derived arrays ``edge_compute_ms``, ``cloud_compute_ms`` and ``offloaded`` have shape
    ``(N+1, E, E, 2)`` over ``(split, exit, stop exit, tau_is_one)``; impossible combinations
    (stop after ``e``, or ``tau_is_one`` with stop != ``e``) are NaN / False.
    """

    exits: tuple[int, ...]
    blocks_ms: np.ndarray = field(repr=False)
    heads_ms: np.ndarray = field(repr=False)
    codecs: tuple[str, ...]
    bytes: np.ndarray = field(repr=False)
    encode_ms: np.ndarray = field(repr=False)
    decode_ms: np.ndarray = field(repr=False)
    edge_slowdown: float = Scenario.edge_slowdown
    cloud_speedup: float = 1.0
    rule_ms: tuple[float, float, float] = (0.0, 0.0, 0.0)  # Os, Oc, Od (see the formula)
    offload_ms: float = 0.0  # Of (see the formula)
    # the edge's own B and H when it runs another runtime than the cloud (None: the same)
    edge_blocks_ms: np.ndarray | None = field(default=None, repr=False)
    edge_heads_ms: np.ndarray | None = field(default=None, repr=False)
    edge_runtime: str = "torch/fp32"
    edge_compute_ms: np.ndarray = field(init=False, repr=False)
    cloud_compute_ms: np.ndarray = field(init=False, repr=False)
    offloaded: np.ndarray = field(init=False, repr=False)
    # Python mirrors for the scalar hot path (list indexing beats numpy scalar indexing).
    _codec_index: dict[str, int] = field(init=False, repr=False)
    _enc_edge_ms: np.ndarray = field(init=False, repr=False)  # (Enc + Of) * slow, (C, N+1)
    _enc_edge: list[list[float]] = field(init=False, repr=False)
    _dec_cloud: list[list[float]] = field(init=False, repr=False)
    _bytes: list[list[float]] = field(init=False, repr=False)
    _edge_l: list = field(init=False, repr=False)
    _cloud_l: list = field(init=False, repr=False)
    _off_l: list = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "exits", tuple(int(b) for b in self.exits))
        object.__setattr__(self, "codecs", tuple(self.codecs))
        for name in ("blocks_ms", "heads_ms", "bytes", "encode_ms", "decode_ms"):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=np.float64))
        for name, same in (("edge_blocks_ms", "blocks_ms"), ("edge_heads_ms", "heads_ms")):
            v = getattr(self, name)
            arr = getattr(self, same) if v is None else np.asarray(v, dtype=np.float64)
            if arr.shape != getattr(self, same).shape:
                raise ValueError(f"{name}: need shape {getattr(self, same).shape}, got {arr.shape}")
            object.__setattr__(self, name, arr)
        rule = tuple(float(v) for v in self.rule_ms)
        if len(rule) != len(RULE_KEYS) or min(rule) < 0:
            raise ValueError(f"rule_ms: need {len(RULE_KEYS)} values >= 0 {RULE_KEYS}, got {rule}")
        object.__setattr__(self, "rule_ms", rule)
        if not self.offload_ms >= 0:
            raise ValueError(f"offload_ms: must be >= 0, got {self.offload_ms}")
        n, n_exits = len(self.blocks_ms), len(self.exits)
        if not self.exits or self.exits[-1] != n or list(self.exits) != sorted(set(self.exits)):
            raise ValueError(
                f"exits: need increasing block indices ending at {n}, got {self.exits}"
            )
        if self.heads_ms.shape != (n_exits,):
            raise ValueError(f"heads_ms: need {n_exits} entries, got {self.heads_ms.shape}")
        for name in ("bytes", "encode_ms", "decode_ms"):
            arr = getattr(self, name)
            if arr.shape != (len(self.codecs), n + 1):
                raise ValueError(f"{name}: need shape {(len(self.codecs), n + 1)}, got {arr.shape}")
        if self.edge_slowdown <= 0 or self.cloud_speedup <= 0:
            raise ValueError(
                f"edge_slowdown/cloud_speedup: must be > 0, got "
                f"{self.edge_slowdown}/{self.cloud_speedup}"
            )
        edge, cloud, off = _compute_tables(
            np.asarray(self.exits),
            (self._edge_blocks, self.blocks_ms),
            (self._edge_heads, self.heads_ms),
            self.edge_slowdown,
            self.cloud_speedup,
            self.rule_ms,
        )
        object.__setattr__(self, "edge_compute_ms", edge)
        object.__setattr__(self, "cloud_compute_ms", cloud)
        object.__setattr__(self, "offloaded", off)
        object.__setattr__(self, "_codec_index", {c: i for i, c in enumerate(self.codecs)})
        # Per-codec link-side terms per split: edge encode (slowed), decode (cloud).
        enc_edge = (self.encode_ms + self.offload_ms) * self.edge_slowdown
        object.__setattr__(self, "_enc_edge_ms", enc_edge)
        object.__setattr__(self, "_enc_edge", enc_edge.tolist())
        object.__setattr__(self, "_dec_cloud", (self.decode_ms / self.cloud_speedup).tolist())
        object.__setattr__(self, "_bytes", self.bytes.tolist())
        object.__setattr__(self, "_edge_l", edge.tolist())
        object.__setattr__(self, "_cloud_l", cloud.tolist())
        object.__setattr__(self, "_off_l", off.tolist())

    @property
    def _edge_blocks(self) -> np.ndarray:
        return cast(np.ndarray, self.edge_blocks_ms)  # set in __post_init__

    @property
    def _edge_heads(self) -> np.ndarray:
        return cast(np.ndarray, self.edge_heads_ms)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_profile(
        cls,
        profile: dict[str, Any],
        exits: tuple[int, ...],
        edge_slowdown: float | None = None,
        cloud_speedup: float = 1.0,
        edge_runtime: str = "torch/fp32",
    ) -> CostModel:
        """Build from a ``profile.json`` dict; ``edge_slowdown=None`` takes the profile's.

        ``edge_runtime`` (``torch/fp32``, ``onnx/fp32``, ``onnx/int8``) picks the edge's block
        and head times: torch's are the profile's own, the others its ``edge_runtimes``."""
        try:
            blocks = np.asarray(profile["blocks_ms"], dtype=np.float64)
            heads_raw = profile["heads_ms"]
            table = profile["codecs"]
        except KeyError as exc:
            raise ValueError(
                f"profile: missing field {exc.args[0]!r}; re-run `edgeml profile`"
            ) from None
        exits = tuple(int(b) for b in exits)
        missing = [b for b in exits if str(b) not in heads_raw]
        if missing:
            raise ValueError(
                f"heads_ms: no entry for exit blocks {missing}; profile has {sorted(heads_raw)}"
            )
        heads = np.asarray([heads_raw[str(b)] for b in exits], dtype=np.float64)
        codecs = tuple(table)
        if not codecs:
            raise ValueError("codecs: the profile has no codec table")

        def stack(key: str) -> np.ndarray:
            try:
                return np.asarray([table[c][key] for c in codecs], dtype=np.float64)
            except KeyError:
                raise ValueError(f"codecs: every codec needs {key!r}") from None

        edge_blocks, edge_heads = blocks, heads
        offload_ms = float(profile.get("offload_fixed_ms", 0.0))
        if edge_runtime != "torch/fp32":
            variants = profile.get("edge_runtimes") or {}
            if edge_runtime not in variants:
                raise ValueError(
                    f"profile: no edge_runtimes[{edge_runtime!r}] (has: "
                    f"{', '.join(variants) or 'none'}); re-run `edgeml profile` on the bundle "
                    "with its ONNX files, or plan for --edge-runtime torch"
                )
            v = variants[edge_runtime]
            edge_blocks = np.asarray(v["blocks_ms"], dtype=np.float64)
            edge_heads = np.asarray([v["heads_ms"][str(b)] for b in exits], dtype=np.float64)
            offload_ms = float(v.get("offload_fixed_ms", offload_ms))
        slow = profile.get("edge_slowdown", Scenario.edge_slowdown)
        slow = float(slow if edge_slowdown is None else edge_slowdown)
        rule = profile.get("rule_overhead_ms", {})
        os_, oc, od = (float(rule.get(k, 0.0)) for k in RULE_KEYS)
        return cls(
            exits=exits, blocks_ms=blocks, heads_ms=heads, codecs=codecs,
            bytes=stack("bytes"), encode_ms=stack("encode_ms"), decode_ms=stack("decode_ms"),
            edge_slowdown=float(slow), cloud_speedup=float(cloud_speedup),
            rule_ms=(os_, oc, od),
            offload_ms=offload_ms,
            edge_blocks_ms=edge_blocks, edge_heads_ms=edge_heads, edge_runtime=edge_runtime,
        )  # fmt: skip

    @classmethod
    def from_bundle(cls, bundle: Any, **kwargs: Any) -> CostModel:
        """Build from a loaded :class:`~edgeml.bundle.Bundle` that has been profiled."""
        if bundle.profile is None:
            raise ValueError(f"{bundle.path}: no profile.json; run `edgeml profile {bundle.path}`")
        return cls.from_profile(bundle.profile, tuple(bundle.manifest.exits), **kwargs)

    # ------------------------------------------------------------------ queries

    @property
    def num_blocks(self) -> int:
        return len(self.blocks_ms)

    @property
    def num_exits(self) -> int:
        return len(self.exits)

    def _check(self, split: int, exit_index: int, stop_exit_index: int, tau_is_one: bool) -> None:
        n, n_exits = self.num_blocks, self.num_exits
        if not 0 <= split <= n:
            raise ValueError(f"split: {split} not in 0..{n}")
        if not 0 <= exit_index < n_exits:
            raise ValueError(f"exit_index: {exit_index} not in 0..{n_exits - 1}")
        if not 0 <= stop_exit_index <= exit_index:
            raise ValueError(
                f"stop_exit_index: {stop_exit_index} not in 0..{exit_index} (exit_index)"
            )
        if tau_is_one and stop_exit_index != exit_index:
            raise ValueError(
                f"stop_exit_index: with tau >= 1 the run stops at exit_index {exit_index}, "
                f"got {stop_exit_index}"
            )

    def codec_index(self, codec: str) -> int:
        try:
            return self._codec_index[codec]
        except KeyError:
            raise ValueError(
                f"codec: {codec!r} not profiled; allowed: {', '.join(self.codecs)}"
            ) from None

    def breakdown(
        self,
        split: int,
        exit_index: int,
        stop_exit_index: int,
        tau_is_one: bool,
        codec: str,
        edge_load: float = 0.0,
    ) -> Breakdown:
        """Per-stage cost of one action (see the module docstring for the formula)."""
        self._check(split, exit_index, stop_exit_index, tau_is_one)
        if edge_load < 0:
            raise ValueError(f"edge_load: must be >= 0, got {edge_load}")
        c = self.codec_index(codec)
        key = (split, exit_index, stop_exit_index, int(tau_is_one))
        load = 1.0 + edge_load
        off = bool(self.offloaded[key])
        return Breakdown(
            edge_ms=float(self.edge_compute_ms[key]) * load,
            encode_ms=float(self._enc_edge[c][split]) * load if off else 0.0,
            bytes=float(self._bytes[c][split]) if off else 0.0,
            decode_ms=float(self._dec_cloud[c][split]) if off else 0.0,
            cloud_ms=float(self.cloud_compute_ms[key]),
            offloaded=off,
        )

    def latency_ms(
        self,
        split: int,
        exit_index: int,
        stop_exit_index: int,
        tau_is_one: bool,
        codec: str,
        bandwidth_mbps: float,
        rtt_ms: float,
        edge_load: float = 0.0,
    ) -> float:
        """End-to-end latency of one action over a link of constant bandwidth (the hot path)."""
        t = 1 if tau_is_one else 0
        try:
            edge = self._edge_l[split][exit_index][stop_exit_index][t]
        except (IndexError, TypeError):
            edge = math.nan
        if split < 0 or exit_index < 0 or stop_exit_index < 0 or edge != edge:  # NaN: invalid
            self._check(split, exit_index, stop_exit_index, tau_is_one)
        c = self._codec_index.get(codec)
        if c is None:
            c = self.codec_index(codec)  # raises with the allowed names
        load = 1.0 + edge_load
        if not self._off_l[split][exit_index][stop_exit_index][t]:
            return edge * load
        if bandwidth_mbps <= 0:
            return math.inf
        return (
            (edge + self._enc_edge[c][split]) * load
            + self._bytes[c][split] * 8.0 / (bandwidth_mbps * 1e3)
            + rtt_ms
            + self._dec_cloud[c][split]
            + self._cloud_l[split][exit_index][stop_exit_index][t]
        )

    def latency_table(
        self, codec: str, bandwidth_mbps: float, rtt_ms: float, edge_load: float = 0.0
    ) -> np.ndarray:
        """Latency of every action as an ``(N+1, E, E, 2)`` array (NaN where impossible)."""
        c = self.codec_index(codec)
        load = 1.0 + edge_load
        if bandwidth_mbps > 0:
            link = self.bytes[c] * 8.0 / (bandwidth_mbps * 1e3) + rtt_ms
        else:
            link = np.full(self.num_blocks + 1, math.inf)
        per_split = self._enc_edge_ms[c] * load + link + self.decode_ms[c] / self.cloud_speedup
        offload = np.where(
            self.offloaded, per_split[:, None, None, None] + self.cloud_compute_ms, 0.0
        )
        return self.edge_compute_ms * load + offload

    def probe_split(self, target_bytes: float) -> int:
        """The split a throughput probe sends: the one whose int8 tensor is closest to
        ``target_bytes``, below the last (split N sends nothing); 0 without int8 sizes."""
        if "int8" not in self._codec_index:
            return 0
        sizes = self.bytes[self._codec_index["int8"]]
        return min(range(self.num_blocks), key=lambda s: abs(sizes[s] - target_bytes))

    def probe_bytes(self, target_bytes: float) -> float:
        """Bytes of the probe :meth:`probe_split` picks (``target_bytes`` without int8
        sizes): what the daemon's probe sends, so what the simulator's edge measures."""
        c = self._codec_index.get("int8")
        return float(target_bytes if c is None else self.bytes[c][self.probe_split(target_bytes)])

    def fallback_exits(self, split: int, exit_index: int) -> list[int]:
        """Exits a local fallback from ``split`` may answer at: past ``split``, up to
        ``exit_index`` if any (else the ones past it: the edge must answer somewhere)."""
        past = [k for k, b in enumerate(self.exits) if b > split]
        return [k for k in past if k <= exit_index] or past

    def local_finish_ms(self, split: int, stop_exit_index: int, edge_load: float = 0.0) -> float:
        """Edge time to go on locally from ``split`` to exit ``stop_exit_index`` (blocks and
        head, slowed): the cost of a fallback answer."""
        blocks = float(np.sum(self._edge_blocks[split : self.exits[stop_exit_index]]))
        head = float(self._edge_heads[stop_exit_index])
        return self.edge_slowdown * (1.0 + edge_load) * (blocks + head)

    def cheapest_fallback_ms(self, split: int, exit_index: int, edge_load: float = 0.0) -> float:
        """The cheapest local answer from ``split``: the shallowest fallback exit's cost (the
        daemon's default grace past the deadline, and its answer once that has passed)."""
        k = min(self.fallback_exits(split, exit_index))
        return self.local_finish_ms(split, k, edge_load)

    def fallback_exit(
        self, split: int, exit_index: int, budget_ms: float, edge_load: float = 0.0
    ) -> int:
        """The deepest fallback exit whose local finish fits in ``budget_ms``, else the
        shallowest one (late either way, so answer as soon as possible)."""
        past = self.fallback_exits(split, exit_index)
        fits = [k for k in past if self.local_finish_ms(split, k, edge_load) <= budget_ms]
        return max(fits) if fits else min(past)

    def compute_ms(
        self, split: int, exit_index: int, stop_exit_index: int, tau_is_one: bool
    ) -> float:
        """Edge plus cloud compute alone (no codec, no link): what the bench checks."""
        b = self.breakdown(split, exit_index, stop_exit_index, tau_is_one, self.codecs[0])
        return b.edge_ms + b.cloud_ms


def _compute_tables(
    exits: np.ndarray,
    blocks: tuple[np.ndarray, np.ndarray],
    heads: tuple[np.ndarray, np.ndarray],
    slow: float,
    speedup: float,
    rule: tuple[float, float, float],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edge ms (slowed), cloud ms and offload flags over (split, exit, stop, tau_is_one);
    ``blocks`` and ``heads`` are (edge, cloud) pairs."""
    n, n_exits = len(blocks[1]), len(exits)
    seg, check, decide = rule
    cums = [np.concatenate([[0.0], np.cumsum(b)]) for b in blocks]
    edge = np.full((n + 1, n_exits, n_exits, 2), np.nan)
    cloud = np.full_like(edge, np.nan)
    off = np.zeros(edge.shape, dtype=bool)

    def part(lo: int, hi: int, evaluated: set[int], side: int = 1) -> float:
        if hi <= lo:
            return 0.0
        at_exits = sum(
            heads[side][k] + decide if k in evaluated else check
            for k in range(n_exits)
            if lo < exits[k] <= hi
        )
        return cums[side][hi] - cums[side][lo] + seg + at_exits

    for s in range(n + 1):
        for e in range(n_exits):
            for j in range(e + 1):
                b = int(exits[j])
                for t in (0, 1):
                    if t and j != e:
                        continue
                    evaluated = {e} if t else set(range(j + 1))
                    m = min(s, b)
                    edge[s, e, j, t] = slow * part(0, m, evaluated, side=0)
                    cloud[s, e, j, t] = part(s, b, evaluated) / speedup if b > s else 0.0
                    off[s, e, j, t] = b > s
    return edge, cloud, off
