"""Bad input to ``evaluate``, ``train-agent`` and ``profile``: one line naming it, exit 2.

Every case fails in the set-up phase (before any episode, training step or timing run), so
the whole file runs in seconds; a traceback only with ``-v``, and an unexpected exception
(a bug) still propagates.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edgeml.assets import ASSETS
from edgeml.cli import main
from edgeml.decision.actor import NumpyActor
from edgeml.errors import InputError

FIXTURE = ASSETS / "bundles" / "fixture"
TRACES = ASSETS / "traces"


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    """A copy of the shipped fixture bundle that a test may break."""
    path = tmp_path / "bundle"
    shutil.copytree(FIXTURE, path)
    return path


def _random_bytes(path: Path, n: int = 512) -> Path:
    path.write_bytes(np.random.default_rng(0).bytes(n))
    return path


def _fails(capsys: pytest.CaptureFixture[str], argv: list[str], *expected: str) -> str:
    """Run ``edgeml argv``; it must exit 2 with one stderr line naming every ``expected``."""
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, f"exit {rc}, stderr: {err}"
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"edgeml {argv[0]}: "), lines[0]
    for text in expected:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"
    return lines[0]


def _evaluate(bundle: Path, *extra: str, traces: Path = TRACES) -> list[str]:
    return ["evaluate", str(bundle), "--traces", str(traces), "--split", "all",
            "--steps", "2", "--segments", "1", "--no-progress", *extra]  # fmt: skip


def _train(bundle: Path, out: Path, *extra: str, traces: Path = TRACES) -> list[str]:
    return ["train-agent", str(bundle), "--traces", str(traces), "--out", str(out),
            "--timesteps", "64", "--n-envs", "1", "--no-progress", *extra]  # fmt: skip


# ---------------------------------------------------------------------- bundle


@pytest.mark.parametrize("command", ["evaluate", "train-agent", "profile"])
def test_missing_bundle_dir(command, tmp_path, capsys):
    missing = tmp_path / "no_such_bundle"
    argv = {
        "evaluate": _evaluate(missing),
        "train-agent": _train(missing, tmp_path / "p.zip"),
        "profile": ["profile", str(missing), "--repeats", "1"],
    }[command]
    _fails(capsys, argv, str(missing), "no such directory, so no manifest.json")


@pytest.mark.parametrize("command", ["evaluate", "train-agent"])
def test_bundle_without_profile(command, bundle, tmp_path, capsys):
    (bundle / "profile.json").unlink()
    argv = _evaluate(bundle) if command == "evaluate" else _train(bundle, tmp_path / "p.zip")
    _fails(capsys, argv, str(bundle), "no profile.json", "edgeml profile")
    assert not (tmp_path / "p.zip").exists()


@pytest.mark.parametrize("command", ["evaluate", "profile"])
@pytest.mark.parametrize(
    ("field", "value", "shown"),
    [
        ("blocks", "three", "'blocks' must be an integer, got 'three' (str)"),
        ("exits", 3, "'exits' must be a list, got 3 (int)"),
        ("dataset", None, "'dataset' must be a string, got None"),
    ],
)
def test_manifest_field_of_the_wrong_type(command, field, value, shown, bundle, capsys):
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest[field] = value
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    argv = _evaluate(bundle) if command == "evaluate" else ["profile", str(bundle)]
    _fails(capsys, argv, str(bundle / "manifest.json"), shown)


def test_manifest_not_json(bundle, capsys):
    (bundle / "manifest.json").write_text("{not json")
    _fails(capsys, _evaluate(bundle), str(bundle / "manifest.json"), "not valid JSON")


def test_missing_weights(bundle, capsys):
    (bundle / "weights.pt").unlink()
    _fails(capsys, ["profile", str(bundle)], "no weights.pt")


@pytest.mark.parametrize("command", ["evaluate", "profile"])
def test_random_bytes_calibration(command, bundle, capsys):
    _random_bytes(bundle / "calibration.npz")
    argv = _evaluate(bundle) if command == "evaluate" else ["profile", str(bundle)]
    line = _fails(capsys, argv, str(bundle / "calibration.npz"), "calibration .npz")
    assert "pickled" not in line


# ---------------------------------------------------------------------- traces

BAD_TRACES = {
    "garbage": ("hello world, this is not a trace\n", ":1: header must be 'time_s,mbps'"),
    "negative": ("time_s,mbps\n0,1.5\n1,-3\n", ":3: mbps -3 must be finite and >= 0"),
    "nan": ("time_s,mbps\n0,1.5\n1,nan\n", ":3: mbps nan must be finite and >= 0"),
    "inf": ("time_s,mbps\n0,inf\n", ":2: mbps inf must be finite and >= 0"),
    "text_mbps": ("time_s,mbps\n0,fast\n", ":2: mbps 'fast' is not a number"),
    "empty": ("", ": empty file; expected a CSV with header 'time_s,mbps'"),
    "header_only": ("time_s,mbps\n", ": no data rows after the header"),
    "wrong_header": ("t,bw\n0,1\n", ":1: header must be 'time_s,mbps', got 't,bw'"),
    "gap": ("time_s,mbps\n0,1\n2,1\n", ":3: time_s 2 should be 1"),
    "columns": ("time_s,mbps\n0,1,7\n", ":2: 3 columns, expected 2"),
    "binary": ("\xff\xfe\xfa", ": not a text file"),
}


@pytest.mark.parametrize("case", sorted(BAD_TRACES))
def test_bad_trace_file_evaluate(case, tmp_path, capsys):
    text, shown = BAD_TRACES[case]
    trace = tmp_path / f"bad_{case}.csv"
    if case == "binary":
        trace.write_bytes(b"\xff\xfe\xfa\x00\x81")
    else:
        trace.write_text(text)
    _fails(capsys, _evaluate(FIXTURE, traces=trace), f"{trace}{shown}")


@pytest.mark.parametrize("case", ["negative", "nan", "empty", "wrong_header"])
def test_bad_trace_file_train_agent(case, tmp_path, capsys):
    trace = tmp_path / f"bad_{case}.csv"
    trace.write_text(BAD_TRACES[case][0])
    out = tmp_path / "p.zip"
    _fails(capsys, _train(FIXTURE, out, traces=trace), f"{trace}{BAD_TRACES[case][1]}")
    assert not out.exists()


def test_bad_trace_in_a_directory_is_named(tmp_path, capsys):
    for k in range(4):
        (tmp_path / f"fam_{k}.csv").write_text("time_s,mbps\n0,1\n1,2\n")
    (tmp_path / "fam_3.csv").write_text("time_s,mbps\n0,1\n1,-2\n")
    _fails(capsys, _evaluate(FIXTURE, traces=tmp_path), str(tmp_path / "fam_3.csv"), ":3: mbps")


@pytest.mark.parametrize("command", ["evaluate", "train-agent"])
def test_missing_traces_path(command, tmp_path, capsys):
    missing = tmp_path / "nope.csv"
    argv = (
        _evaluate(FIXTURE, traces=missing)
        if command == "evaluate"
        else _train(FIXTURE, tmp_path / "p.zip", traces=missing)
    )
    _fails(capsys, argv, str(missing), "neither a CSV file nor a directory")


def test_empty_split_says_how_to_fix(capsys):
    argv = _evaluate(FIXTURE)
    argv[argv.index("all")] = "test"  # the shipped sample has 2 files per family: no test file
    _fails(capsys, argv, "'test' split", "--split all")


# ---------------------------------------------------------------------- policy


def test_missing_policy(tmp_path, capsys):
    missing = tmp_path / "policy.zip"
    _fails(capsys, _evaluate(FIXTURE, "--policy", str(missing)), str(missing), "no such file",
           ".zip from `edgeml train-agent`", ".npz")  # fmt: skip


@pytest.mark.parametrize("suffix", [".zip", ".npz"])
def test_random_bytes_policy(suffix, tmp_path, capsys):
    policy = _random_bytes(tmp_path / f"policy{suffix}")
    line = _fails(capsys, _evaluate(FIXTURE, "--policy", str(policy)), str(policy))
    assert "pickled" not in line
    assert ("policy .zip" if suffix == ".zip" else "actor .npz") in line


def test_zip_that_is_no_sb3_model(tmp_path, capsys):
    policy = tmp_path / "policy.zip"
    with zipfile.ZipFile(policy, "w") as z:
        z.writestr("readme.txt", "hello")
    _fails(capsys, _evaluate(FIXTURE, "--policy", str(policy)), str(policy), "policy .zip")


def test_policy_of_another_kind(tmp_path, capsys):
    policy = tmp_path / "policy.pt"
    policy.write_bytes(b"x")
    _fails(capsys, _evaluate(FIXTURE, "--policy", str(policy)), str(policy), "unknown kind '.pt'")


def test_npz_without_actor_arrays(tmp_path, capsys):
    policy = tmp_path / "policy.npz"
    np.savez(policy, x=np.zeros(3))
    _fails(capsys, _evaluate(FIXTURE, "--policy", str(policy)), str(policy), "lacks arrays")


def test_actor_for_another_bundle(tmp_path, capsys):
    from edgeml.decision.observation import obs_size

    rng = np.random.default_rng(0)
    nvec = (2, 2, 2)
    actor = NumpyActor(
        (rng.normal(size=(8, obs_size(3))), rng.normal(size=(sum(nvec), 8))),
        (np.zeros(8), np.zeros(sum(nvec))),
        nvec,
    )
    policy = actor.save(tmp_path / "other.npz")
    _fails(capsys, _evaluate(FIXTURE, "--policy", str(policy)), str(policy), "(2, 2, 2)",
           "train it on this bundle")  # fmt: skip


# ---------------------------------------------------------------------- flags


@pytest.mark.parametrize(
    ("argv_extra", "shown"),
    [
        (["--steps", "0"], "episode_steps: must be an integer >= 1, got 0"),
        (["--segments", "-1"], "segments: must be an integer >= 1, got -1"),
        (["--deadline-ms", "-5"], "deadline_ms: must be > 0"),
        (["--codec", "zip9"], "codec: 'zip9' not profiled; allowed: "),
    ],
)
def test_bad_evaluate_flags(argv_extra, shown, capsys):
    _fails(capsys, [*_evaluate(FIXTURE), *argv_extra], shown)


@pytest.mark.parametrize(
    ("argv_extra", "shown"),
    [
        (["--timesteps", "0"], "--timesteps: must be >= 1, got 0"),
        (["--n-envs", "0"], "--n-envs: must be >= 1, got 0"),
        (["--eval-freq", "0"], "--eval-freq: must be >= 1, got 0"),
        (["--learning-rate", "0"], "--learning-rate: must be > 0, got 0.0"),
        (["--lr-final-fraction", "1.5"], "--lr-final-fraction: must be in (0, 1], got 1.5"),
    ],
)
def test_bad_train_flags(argv_extra, shown, tmp_path, capsys):
    _fails(capsys, [*_train(FIXTURE, tmp_path / "p.zip"), *argv_extra], shown)


def test_train_out_must_be_zip(tmp_path, capsys):
    _fails(capsys, _train(FIXTURE, tmp_path / "p.pt"), "out: the policy file must end in .zip")


def test_bad_profile_flags(capsys):
    _fails(capsys, ["profile", str(FIXTURE), "--repeats", "0"], "--repeats: must be >= 1")


def test_unwritable_output_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    out = blocker / "results.json"  # a path under a regular file
    _fails(capsys, [*_evaluate(FIXTURE), "--json", str(out)], str(blocker))


# ---------------------------------------------------------------------- -v and real bugs


def test_verbose_adds_the_traceback(tmp_path, capsys):
    rc = main(["-v", *_evaluate(tmp_path / "missing")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "Traceback" in err and "BundleError" in err
    assert err.strip().splitlines()[-1].startswith("edgeml evaluate: ")


@pytest.mark.parametrize("exc", [RuntimeError("a bug"), ValueError("a bug in the work")])
def test_unexpected_errors_still_propagate(exc, monkeypatch):
    from edgeml.rl_agent import evaluate as ev

    def broken(*args, **kwargs):
        raise exc

    monkeypatch.setattr(ev, "evaluate", broken)
    with pytest.raises(type(exc), match="a bug"):
        main(_evaluate(FIXTURE))


def test_from_a_fresh_process_no_traceback(tmp_path):
    """The installed command, as a user runs it: exit 2, one line on stderr, nothing else."""
    trace = tmp_path / "neg.csv"
    trace.write_text("time_s,mbps\n0,1\n1,-3\n")
    argv = _evaluate(FIXTURE, "--policy", str(_random_bytes(tmp_path / "p.zip")), traces=trace)
    out = subprocess.run(
        [sys.executable, "-m", "edgeml.cli", *argv], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"edgeml evaluate: {trace}:3: mbps -3 must be finite and >= 0"
    ]


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--edge-slowdowns", "4,0.5"), ("--edge-slowdowns", "fast"), ("--fleet-sizes", "1,x")],
)
def test_bad_train_lists_are_named(flag, value, tmp_path, capsys):
    out = tmp_path / "p.zip"
    _fails(capsys, _train(FIXTURE, out, flag, value), flag, "comma-separated numbers >= 1",
           repr(value))  # fmt: skip
    assert not out.exists()


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["demo", "--episode-steps", "50"], "--episode-steps"),
        (["emulate", "--trace", "x.csv", "--load-busy-share", "0.5"], "--load-*"),
        (["fleet", "--grace-ms", "5"], "--grace-ms"),
        (["demo", "--cloud-speedup", "0.5"], "--cloud-speedup"),  # the demo's server is unpaced
    ],
)
def test_a_live_run_refuses_scenario_flags_it_does_not_carry(argv, flag, capsys):
    _fails(capsys, argv, flag, "not used by this command", "deadline_ms")


def test_the_fleet_carries_the_clouds_speed_to_its_config() -> None:
    from edgeml.cli import make_parser
    from edgeml.runtime.commands import _live_run_fields

    args = make_parser().parse_args(["fleet", "--cloud-speedup", "0.25", "--edge-slowdown", "48"])
    got = _live_run_fields(args, "cloud_speedup")
    assert got["cloud_speedup"] == 0.25 and got["edge_slowdown"] == 48.0


def test_a_fleet_draws_its_edges_links_from_the_families_asked(tmp_path) -> None:
    from edgeml.cli import make_parser
    from edgeml.runtime.commands import _live_run_fields
    from edgeml.runtime.fleet_live import FleetConfig, pick_edges

    for fam in ("cell", "wire"):
        for i in range(8):  # files 3 and 7 of each family are its test split
            (tmp_path / f"{fam}_{i}.csv").write_text("time_s,mbps\n" + "".join(
                f"{t},{1.0 + i}\n" for t in range(100)))  # fmt: skip
    args = make_parser().parse_args(["fleet", "--families", "cell", "--edges", "3"])
    cfg = FleetConfig(**_live_run_fields(args), edges=args.edges, families=args.families)
    edges = pick_edges(cfg, tmp_path)
    assert [p.name for p, _, _ in edges] == ["cell_3.csv", "cell_7.csv", "cell_3.csv"]
    both = pick_edges(FleetConfig(edges=4), tmp_path)
    assert sorted(p.name for p, _, _ in both) == ["cell_3.csv", "cell_7.csv", "wire_3.csv",
                                                  "wire_7.csv"]  # fmt: skip
    with pytest.raises(InputError, match=r"families: \['lte'\] not found"):
        pick_edges(FleetConfig(edges=2, families=("lte",)), tmp_path)


def test_families_keep_training_and_evaluation_to_their_traces(tmp_path, capsys) -> None:
    out = tmp_path / "p.zip"
    assert main(_train(FIXTURE, out, "--split", "all", "--families", "belgium4g")) == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["traces"] == sorted(p.name for p in TRACES.glob("belgium4g_*.csv"))
    assert meta["scenario"]["families"] == ["belgium4g"]
    res = tmp_path / "eval.json"
    assert main(_evaluate(FIXTURE, "--families", "fcc,hsdpa", "--json", str(res))) == 0
    assert json.loads(res.read_text())["traces"]["families"] == ["fcc", "hsdpa"]
    _fails(capsys, _evaluate(FIXTURE, "--families", "lte"), "families: ['lte'] not found")
    _fails(capsys, _train(FIXTURE, out, "--families", "lte"), "families: ['lte'] not found")
