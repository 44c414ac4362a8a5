"""Re-simulate stored live fleet runs with the simulator as it is now.

A live run (``edgeml fleet``, its ``fleet.json``) holds its measurements and the simulation
of the same fleet by the simulator of the day it ran. When the simulator changes, the live
measurements stay what they were and only their simulation must be run again: the same
edges (traces, offsets, seeds, phases, the frames each edge saw), policies, cloud
calibration and stack, as stored.
This replaces each run's ``sim`` entries (noting the commit that simulated them) and prints
its live / simulated table. A stored trace path that is gone (a temporary directory) is
looked up by its file name in the shared traces.

    .venv/bin/python bench/fleet_resim.py bench/results/fleet_live_slowcloud*
"""

from __future__ import annotations

import argparse
import json
import subprocess
from dataclasses import fields
from pathlib import Path
from typing import Any

from edgeml.runtime.calibration import Stack
from edgeml.runtime.demo import find_traces_dir, load_bundle
from edgeml.runtime.fleet_live import FleetConfig
from edgeml.runtime.fleet_report import format_lead, format_table, ppo_lead
from edgeml.runtime.fleet_twin import edge_inputs, simulate
from edgeml.runtime.sources import default_source

REPO = Path(__file__).resolve().parent.parent


def _trace(path: str) -> Path:
    p = Path(path)
    return p if p.is_file() else find_traces_dir() / p.name


def resimulate(run: Path) -> dict[str, Any]:
    """``run``'s report with every policy simulated again (written back to ``fleet.json``)."""
    path = run / "fleet.json"
    report = json.loads(path.read_text())
    known = {f.name for f in fields(FleetConfig)}
    stored = {k: v for k, v in report["config"].items() if k in known}
    cfg = FleetConfig(**{**stored, "baselines": tuple(stored.get("baselines", ()))})
    bundle = load_bundle(cfg.bundle, run)
    edges = [(_trace(e["trace"]), e["offset_s"], e["seed"]) for e in report["edges"]]
    stack = Stack(**report["stack"])
    inputs = edge_inputs(cfg, bundle, default_source(bundle.manifest.dataset), edges)
    for name, result in report["results"].items():
        spec = report["policy"] if name == "ppo" else name
        result["sim"] = simulate(cfg, bundle, spec, edges, report["cloud_slowdown"], stack,
                                 inputs)  # fmt: skip
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                            capture_output=True, text=True).stdout.strip()  # fmt: skip
    report["simulated_at"] = commit or None
    report["lead"] = ppo_lead(report["results"])
    path.write_text(json.dumps(report, indent=2) + "\n")
    return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path, help="directories holding a fleet.json")
    for run in p.parse_args().runs:
        report = resimulate(run)
        print(format_table(report["results"], f"{run} (simulated at {report['simulated_at']})"))
        if report["lead"]:
            print(format_lead(report["lead"]))
        print()


if __name__ == "__main__":
    main()
