"""Traces: loading, families, the train/test split, and transfer time over a varying link."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from edgeml.rl_agent.traces import (
    Trace,
    default_traces_dir,
    family_of,
    load_trace,
    load_traces,
    split_traces,
)

MB = 1_000_000  # 8 Mbps carries 1 MB per second


def write(path: Path, mbps: list[float]) -> Path:
    path.write_text("time_s,mbps\n" + "".join(f"{i},{v}\n" for i, v in enumerate(mbps)))
    return path


def test_family_is_the_prefix_before_underscore() -> None:
    assert family_of("fcc_trace_866_http---www.amazon.com.csv") == "fcc"
    assert family_of("/x/hsdpa_bus.a-b.csv") == "hsdpa"
    assert family_of("plain.csv") == "plain"


def test_split_every_fourth_file_per_family_is_test() -> None:
    names = [f"a_{i:02d}.csv" for i in range(9)] + [f"b_{i}.csv" for i in range(3)]
    test = split_traces(names, "test")
    train = split_traces(names, "train")
    assert test == ["a_03.csv", "a_07.csv"]  # family b has < 4 files: no test file
    assert sorted(train + test) == sorted(names)
    assert split_traces(reversed(names), "test") == test  # order of discovery is irrelevant
    with pytest.raises(ValueError, match="split"):
        split_traces(names, "val")


def test_load_directory_split_and_families(tmp_path: Path) -> None:
    for i in range(4):
        write(tmp_path / f"fam_{i}.csv", [1.0, 2.0])
    write(tmp_path / "other_0.csv", [3.0])
    assert [t.name for t in load_traces(tmp_path, "test")] == ["fam_3.csv"]
    train = load_traces(tmp_path, "train")
    assert {t.family for t in train} == {"fam", "other"} and len(train) == 4
    assert [t.name for t in load_traces(tmp_path, families=["other"])] == ["other_0.csv"]
    one = load_traces(tmp_path / "fam_0.csv")
    assert len(one) == 1 and one[0].mbps.tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match="families"):
        load_traces(tmp_path, families=["nope"])


def test_bad_csv_is_refused_with_the_reason(tmp_path: Path) -> None:
    bad = tmp_path / "x_bad.csv"
    bad.write_text("t,bw\n0,1\n")
    with pytest.raises(ValueError, match="header"):
        load_trace(bad)
    bad.write_text("time_s,mbps\n0,1\n2,1\n")
    with pytest.raises(ValueError, match="1-s bins"):
        load_trace(bad)
    with pytest.raises(ValueError, match="neither"):
        load_traces(tmp_path / "missing")


def test_shipped_sample_has_every_family() -> None:
    traces = load_traces()
    assert {t.family for t in traces} == {"belgium4g", "fcc", "hsdpa"}
    assert (default_traces_dir() / "README.md").is_file()


def test_transfer_within_one_bin() -> None:
    tr = Trace("x_a.csv", np.array([8.0, 8.0]))
    assert tr.transfer_s(MB / 2, 0.25) == pytest.approx(0.5)


def test_transfer_spanning_a_slow_second_is_slow() -> None:
    fast = Trace("x_fast.csv", np.array([8.0, 8.0, 8.0]))
    slow_mid = Trace("x_slow.csv", np.array([8.0, 0.8, 8.0]))
    # 1.5 MB from t=0: 1 MB in second 0, then 0.1 MB in second 1, then 0.4 MB in second 2.
    assert fast.transfer_s(1.5 * MB, 0.0) == pytest.approx(1.5)
    assert slow_mid.transfer_s(1.5 * MB, 0.0) == pytest.approx(2.4)


def test_outage_is_waited_out_and_trace_loops() -> None:
    tr = Trace("x_out.csv", np.array([8.0, 0.0, 0.0, 8.0]))
    assert tr.transfer_s(MB, 1.0) == pytest.approx(3.0)  # waits seconds 1 and 2
    assert tr.transfer_s(2 * MB, 0.0) == pytest.approx(4.0)
    # Starting in the last second: 1 MB there, then it loops to second 0 of the next pass.
    assert tr.transfer_s(1.5 * MB, 3.0) == pytest.approx(1.5)
    assert tr.transfer_s(MB, 1.0, max_s=2.5) == math.inf  # past the cap
    assert Trace("x_dead.csv", np.zeros(3)).transfer_s(10, 0.0) == math.inf
    assert tr.transfer_s(0, 1.5) == 0.0


def test_vectorised_transfer_matches_scalar() -> None:
    rng = np.random.default_rng(0)
    mbps = rng.uniform(0, 5, 50)
    mbps[rng.integers(50, size=10)] = 0.0
    tr = Trace("x_r.csv", mbps)
    nbytes = rng.uniform(0, 2e6, 500)
    starts = rng.uniform(0, 150, 500)
    pairs = zip(nbytes, starts, strict=True)
    scalar = np.array([tr.transfer_s(b, s, max_s=20.0) for b, s in pairs])
    vec = tr.transfer_s_many(nbytes, starts, max_s=20.0)
    assert np.array_equal(np.isinf(scalar), np.isinf(vec))
    finite = np.isfinite(scalar)
    assert np.allclose(scalar[finite], vec[finite], rtol=1e-9, atol=1e-9)


def test_mbps_at_loops_the_trace() -> None:
    tr = Trace("x_m.csv", np.array([2.0, 4.0]))
    assert tr.mbps_at(1.5) == 4.0 and tr.mbps_at(2.2) == 2.0
