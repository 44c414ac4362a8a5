"""Train the PPO agent on your own bandwidth traces and compare it with the baselines.

Run:  .venv/bin/python examples/train_agent_on_your_traces.py TRACES_DIR [BUNDLE]

TRACES_DIR holds ``time_s,mbps`` CSVs in 1-second bins (``time_s`` = 0, 1, 2, ...), named
``<family>_<anything>.csv``; every 4th file of each family (sorted by name) is held out
for testing (so give each family at least 4 files). Without arguments the project's
``../shared/traces`` and the default bundle are used. The result is ``my_policy.zip``
plus ``my_policy.npz``, the numpy actor that ``edgeml edge --policy my_policy.npz`` runs.

This is a short run (minutes) to show the steps; ``edgeml train-agent`` has the full
defaults, progress and TensorBoard logs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from edgeml.assets import default_bundle
from edgeml.bundle import Bundle
from edgeml.decision.policies import make_policy
from edgeml.decision.scenario import Scenario
from edgeml.rl_agent.evaluate import EvalConfig, evaluate, format_table, make_env
from edgeml.rl_agent.traces import load_traces
from edgeml.rl_agent.train import TrainConfig, train_agent
from edgeml.runtime.demo import find_traces_dir

torch.set_num_threads(1)


def main() -> None:
    traces_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else find_traces_dir()
    bundle = Bundle.load(sys.argv[2] if len(sys.argv) > 2 else default_bundle())
    train = load_traces(traces_dir, split="train")
    test = load_traces(traces_dir, split="test")
    print(f"{len(train)} train and {len(test)} test traces from {traces_dir}")

    # The scenario: what the deployment looks like (every field is overridable).
    scenario = Scenario(bundle=str(bundle.path), deadline_ms=100.0, rtt_ms=40.0, edge_slowdown=12.0)
    result = train_agent(
        bundle, train, "my_policy.zip", TrainConfig(timesteps=50_000, n_envs=4), scenario
    )
    print(f"trained in {result.seconds:.0f} s -> {result.policy}, actor {result.actor}")

    cfg = EvalConfig(segments=2, episode_steps=300)
    env = make_env(scenario, test, cfg, bundle)  # policies are made for its world
    names = (str(result.actor), "edge_only", "cloud_only", "neurosurgeon", "edgent", "spinn")
    policies = [make_policy(n, env.world) for n in (*names, "oracle")]
    report, _ = evaluate(policies, scenario, test, cfg, env=env)
    print(format_table(report))


if __name__ == "__main__":
    main()
