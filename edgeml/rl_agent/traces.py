"""Bandwidth traces: ``time_s,mbps`` CSVs in 1-s bins, families, a train/test split, transfers.

A trace is a piecewise-constant rate (bin ``i`` holds ``mbps[i]`` over ``[i, i+1)`` s) that
loops. A transfer of ``B`` bytes that starts at ``t`` ends when the integral of the rate from
``t`` reaches ``8 B`` bits, so a transfer that spans a slow second is slow and an outage
(0 Mbps) is waited out. Prefix sums make that a binary search instead of a loop over bins.

Family = the file-name prefix before the first ``_`` (``fcc_trace_866_...`` -> ``fcc``).
Split: within each family, files sorted by name; every 4th (positions 3, 7, 11, ...) is a
test file, the rest train. The rule depends only on names, so it is the same on every
machine; a family with fewer than 4 files has no test file.
"""

from __future__ import annotations

import bisect
import csv
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeml.errors import InputError

log = logging.getLogger(__name__)

__all__ = [
    "TEST_EVERY",
    "Trace",
    "default_traces_dir",
    "family_of",
    "load_trace",
    "load_traces",
    "select_families",
    "split_traces",
]

TEST_EVERY = 4  # every 4th file (sorted by name) of a family is a test file
SPLITS = ("train", "test", "all")


def default_traces_dir() -> Path:
    """The small trace sample shipped with the package (2 files per family)."""
    from edgeml.assets import ASSETS

    return ASSETS / "traces"


def family_of(name: str) -> str:
    """``fcc_trace_866_x.csv`` -> ``fcc`` (a name without ``_`` is its own family)."""
    return Path(name).name.split("_", 1)[0].removesuffix(".csv")


@dataclass(frozen=True, eq=False)
class Trace:
    """One looping bandwidth trace; ``mbps[i]`` is the mean rate over second ``i``."""

    name: str
    mbps: np.ndarray
    family: str = ""
    _cum_bits: np.ndarray = field(init=False, repr=False)
    _cum_list: list[float] = field(init=False, repr=False)
    _rate_bps: list[float] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        mbps = np.asarray(self.mbps, dtype=np.float64)
        if mbps.ndim != 1 or len(mbps) == 0:
            raise ValueError(f"{self.name}: mbps must be a non-empty 1-D array")
        if not np.all(np.isfinite(mbps)) or np.any(mbps < 0):
            raise ValueError(f"{self.name}: mbps must be finite and >= 0")
        object.__setattr__(self, "mbps", mbps)
        if not self.family:
            object.__setattr__(self, "family", family_of(self.name))
        rate = mbps * 1e6
        cum = np.concatenate([[0.0], np.cumsum(rate)])
        object.__setattr__(self, "_cum_bits", cum)
        object.__setattr__(self, "_cum_list", cum.tolist())
        object.__setattr__(self, "_rate_bps", rate.tolist())

    @property
    def duration_s(self) -> int:
        return len(self.mbps)

    @property
    def total_bits(self) -> float:
        """Bits one loop of the trace carries (0 for an all-outage trace)."""
        return self._cum_list[-1]

    def mbps_at(self, t: float) -> float:
        """The rate of the bin that holds time ``t`` (looping)."""
        return float(self._rate_bps[int(t % self.duration_s)]) / 1e6

    def bits_until(self, t: float) -> float:
        """Bits the link could carry from time 0 to ``t`` (looping; ``t >= 0``)."""
        loops, r = divmod(t, self.duration_s)
        i = min(int(r), self.duration_s - 1)
        return loops * self.total_bits + self._cum_list[i] + (r - i) * self._rate_bps[i]

    def time_of_bits(self, bits: float) -> float:
        """The earliest time at which ``bits_until`` reaches ``bits`` (inverse of it)."""
        total = self.total_bits
        loops, rem = divmod(bits, total)
        if rem <= 0.0:
            # Exactly at a loop boundary: the end of the last carrying bin of the last loop.
            if loops == 0:
                return 0.0
            loops, rem = loops - 1, total
        # First bin i whose end cum[i+1] reaches rem; it has a positive rate.
        i = bisect.bisect_left(self._cum_list, rem, 1) - 1
        return loops * self.duration_s + i + (rem - self._cum_list[i]) / self._rate_bps[i]

    def transfer_s(self, nbytes: float, start_s: float, max_s: float = math.inf) -> float:
        """Seconds to push ``nbytes`` starting at ``start_s``; ``inf`` past ``max_s``.

        An all-zero trace (or a transfer that would outlast ``max_s``) returns ``inf``.
        """
        if nbytes <= 0:
            return 0.0
        if self.total_bits <= 0:
            return math.inf
        i = int(start_s % self.duration_s)
        rate = self._rate_bps[i]
        bits = nbytes * 8.0
        # Fast path: most transfers end inside the bin they start in.
        if rate > 0 and bits / rate <= (i + 1) - (start_s % self.duration_s):
            dt = bits / rate
        else:
            dt = self.time_of_bits(self.bits_until(start_s) + bits) - start_s
        return dt if dt <= max_s else math.inf

    def transfer_s_many(
        self, nbytes: np.ndarray, start_s: np.ndarray, max_s: float = math.inf
    ) -> np.ndarray:
        """Vectorised :meth:`transfer_s` over arrays of byte counts and start times."""
        nbytes = np.asarray(nbytes, dtype=np.float64)
        start = np.broadcast_to(np.asarray(start_s, dtype=np.float64), nbytes.shape)
        out = np.zeros(nbytes.shape)
        send = nbytes > 0
        if not send.any():
            return out
        if self.total_bits <= 0:
            out[send] = math.inf
            return out
        n, total, cum = self.duration_s, self.total_bits, self._cum_bits
        rate = cum[1:] - cum[:-1]
        loops, r = np.divmod(start, n)
        i = np.minimum(r.astype(np.int64), n - 1)
        b0 = loops * total + cum[i] + (r - i) * rate[i]
        target = b0 + nbytes * 8.0
        tl, rem = np.divmod(target, total)
        edge = rem <= 0
        tl = np.where(edge, tl - 1, tl)
        rem = np.where(edge, total, rem)
        j = np.searchsorted(cum[1:], rem, side="left")
        j = np.minimum(j, n - 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            end = tl * n + j + (rem - cum[j]) / rate[j]
        dt = np.where(send, end - start, 0.0)
        return np.where(dt <= max_s, dt, math.inf)


HEADER = ("time_s", "mbps")
_FORMAT = "a CSV with header 'time_s,mbps' and one row per second from 0"


def _number(path: Path, line: int, field: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise InputError(f"{path}:{line}: {field} {text.strip()!r} is not a number") from None


def load_trace(path: str | Path) -> Trace:
    """Read one ``time_s,mbps`` CSV; rows must be consecutive 1-s bins from 0.

    Anything else is an :class:`~edgeml.errors.InputError` naming the file, the line and
    what is allowed: the header, two numeric columns, ``time_s`` = 0, 1, 2, ... and
    ``mbps`` finite and >= 0, at least one row.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text file; expected {_FORMAT}") from None
    except csv.Error as exc:
        raise InputError(f"{path}: not a CSV ({exc}); expected {_FORMAT}") from None
    if not rows:
        raise InputError(f"{path}: empty file; expected {_FORMAT}")
    header = [c.strip() for c in rows[0]]
    if tuple(header) != HEADER:
        raise InputError(f"{path}:1: header must be 'time_s,mbps', got {','.join(header)!r}")
    mbps: list[float] = []
    for line, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue  # blank line
        if len(row) != 2:
            raise InputError(f"{path}:{line}: {len(row)} columns, expected 2 (time_s,mbps)")
        t = _number(path, line, "time_s", row[0])
        if t != len(mbps):
            raise InputError(
                f"{path}:{line}: time_s {row[0].strip()} should be {len(mbps)}; "
                "time_s must be 0, 1, 2, ... (1-s bins)"
            )
        v = _number(path, line, "mbps", row[1])
        if not (math.isfinite(v) and v >= 0):
            raise InputError(f"{path}:{line}: mbps {row[1].strip()} must be finite and >= 0")
        mbps.append(v)
    if not mbps:
        raise InputError(f"{path}: no data rows after the header; expected {_FORMAT}")
    return Trace(path.name, np.asarray(mbps))


def _csv_files(source: str | Path) -> list[Path]:
    p = Path(source)
    if p.is_file():
        return [p]
    if p.is_dir():
        files = sorted(q for q in p.glob("*.csv") if q.is_file())
        if files:
            return files
        raise InputError(f"traces: no *.csv files in {p}")
    raise InputError(
        f"traces: {p} is neither a CSV file nor a directory (no such path); "
        "expected a time_s,mbps CSV or a directory of them"
    )


def split_traces(names: Iterable[str], split: str) -> list[str]:
    """The names of one split (``train``, ``test`` or ``all``), sorted; see the module doc."""
    if split not in SPLITS:
        raise InputError(f"split: {split!r} not one of {', '.join(SPLITS)}")
    by_family: dict[str, list[str]] = {}
    for name in sorted(set(names)):
        by_family.setdefault(family_of(name), []).append(name)
    out = []
    for members in by_family.values():
        for pos, name in enumerate(members):
            is_test = pos % TEST_EVERY == TEST_EVERY - 1
            if split == "all" or (split == "test") == is_test:
                out.append(name)
    return sorted(out)


def select_families(traces: Sequence[Trace], families: Sequence[str] | None) -> list[Trace]:
    """The traces of ``families`` (None: all); a family none of them has is an error, not
    an empty or silently wider set."""
    if families is None:
        return list(traces)
    unknown = set(families) - {t.family for t in traces}
    if unknown:
        raise InputError(f"families: {sorted(unknown)} not found in the traces")
    return [t for t in traces if t.family in set(families)]


def load_traces(
    source: str | Path | Sequence[str | Path] | None = None,
    split: str = "all",
    families: Sequence[str] | None = None,
) -> list[Trace]:
    """Load traces from a CSV, a directory, or a list of them (default: the shipped sample).

    ``split`` keeps the train or test files of each family (``all`` keeps every file);
    ``families`` keeps only those families. The split is decided per source directory.
    """
    sources = (
        [default_traces_dir()]
        if source is None
        else [source]
        if isinstance(source, str | Path)
        else list(source)
    )
    files: list[Path] = []
    for src in sources:
        found = _csv_files(src)
        keep = set(split_traces([f.name for f in found], split))
        files += [f for f in found if f.name in keep]
    traces = select_families([load_trace(f) for f in files], families)
    if not traces:
        where = ", ".join(str(s) for s in sources)
        raise InputError(
            f"traces: the {split!r} split of {where} is empty (each family's test files are "
            f"every {TEST_EVERY}th by name; --split all uses every file)"
        )
    log.debug("loaded %d traces (%s split)", len(traces), split)
    return traces
