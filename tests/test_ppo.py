"""A short real PPO run: it learns, its exported actor agrees with SB3, evaluate writes the
contract's JSON and a plot."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgeml.bundle import Bundle
from edgeml.cli import main
from edgeml.decision.actor import NumpyActor
from edgeml.decision.policies import RandomPolicy, make_policy
from edgeml.decision.scenario import Scenario
from edgeml.rl_agent import evaluate as ev
from edgeml.rl_agent.env import EdgeCloudEnv
from edgeml.rl_agent.evaluate import METRICS, EvalConfig, evaluate, make_env
from edgeml.rl_agent.traces import default_traces_dir, load_traces
from edgeml.rl_agent.train import TrainConfig, TrainResult, check_actor, train_agent
from edgeml.rl_agent.warm_start import WarmStartConfig, warm_start

CONTRACT_POLICIES = {"ppo", "oracle", "oracle_sample", "edge_only", "cloud_only",
                     "neurosurgeon", "edgent", "spinn", "random"}  # fmt: skip


@pytest.fixture(scope="module")
def trained(profiled_bundle: Bundle, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    cfg = TrainConfig(timesteps=4096, n_envs=4, n_steps=256, batch_size=256, seed=0,
                      eval_freq=2048, eval_episodes=3, progress=False, learning_rate=3e-4,
                      net_arch=(64, 64), warm_start=WarmStartConfig(teacher="none"))  # fmt: skip
    out = tmp_path_factory.mktemp("policy") / "p.zip"
    return train_agent(profiled_bundle, load_traces(), out, cfg, Scenario(episode_steps=200))


def test_training_writes_policy_actor_best_model_and_logs(trained: TrainResult) -> None:
    assert trained.policy.is_file() and trained.actor.is_file()
    assert trained.best is not None and trained.best.is_file()
    meta = json.loads(trained.policy.with_suffix(".json").read_text())
    assert meta["train"]["timesteps"] == 4096 and meta["seconds"] > 0
    tb = Path(str(trained.policy.with_suffix("")) + "_tb")
    assert any(tb.rglob("events.out.tfevents.*"))


def test_train_agent_as_a_user_calls_it(profiled_bundle: Bundle, tmp_path: Path) -> None:
    """A bundle directory, a trace directory (its training files) and keyword options that
    land in TrainConfig and Scenario; an unknown option is refused by name."""
    from edgeml.errors import InputError

    with pytest.raises(InputError, match=r"unknown options \['timestep'\]"):
        train_agent(profiled_bundle.path, default_traces_dir(), tmp_path / "x.zip", timestep=1)
    with pytest.raises(InputError, match=r"edge_load_busy: busy: need 0 <= low <= high"):
        train_agent(profiled_bundle.path, default_traces_dir(), tmp_path / "x.zip",
                    edge_load_busy=(1.5, 0.2))  # fmt: skip
    res = train_agent(profiled_bundle.path, default_traces_dir(), tmp_path / "u.zip",
                      timesteps=512, n_envs=2, n_steps=256, batch_size=256, eval_freq=256,
                      eval_episodes=1, progress=False, episode_steps=100, deadline_ms=250.0,
                      warm_start={"teacher": "edgent", "steps": 200, "epochs": 1},
                      edge_slowdowns=(2.0, 6.0), edge_load_busy=(0.25, 1.5))  # fmt: skip
    meta = json.loads(res.policy.with_suffix(".json").read_text())
    assert meta["scenario"]["load"]["busy"] == [0.25, 1.5]  # what the envs trained on
    assert meta["train"]["timesteps"] == 512 and meta["train"]["n_envs"] == 2
    assert meta["scenario"]["episode_steps"] == 100 and meta["scenario"]["deadline_ms"] == 250.0
    assert meta["train"]["edge_slowdowns"] == [2.0, 6.0]
    assert meta["warm_start"]["states"] == 200  # 100 teacher states at each slowdown
    # one policy for the range: the slowdown is in its observation, so the envs differ
    obs = {s: EdgeCloudEnv(Scenario(edge_slowdown=s), bundle=profiled_bundle).reset(seed=0)[0]
           for s in (2.0, 6.0)}  # fmt: skip
    assert NumpyActor.load(res.actor).obs_size == len(obs[2.0])
    assert obs[2.0][-1] != obs[6.0][-1] and np.array_equal(obs[2.0][:-1], obs[6.0][:-1])


def test_short_ppo_run_beats_random(trained: TrainResult, profiled_bundle: Bundle) -> None:
    cfg, traces = EvalConfig(segments=2, episode_steps=200, seed=1), load_traces()
    env = make_env(Scenario(), traces, cfg, bundle=profiled_bundle)
    ppo = make_policy(str(trained.policy), env.world, bundle_sha256=profiled_bundle.weights_sha256)
    res, _ = evaluate([ppo, RandomPolicy(env.world, 0)], Scenario(), traces, cfg,
                      progress=False, env=env)  # fmt: skip
    pol = res["policies"]
    assert pol["ppo"]["timely_accuracy"] > pol["random"]["timely_accuracy"] + 0.02
    assert pol["ppo"]["reward"] > pol["random"]["reward"]


def test_exported_actor_agrees_with_sb3(trained: TrainResult, profiled_bundle: Bundle) -> None:
    from stable_baselines3 import PPO

    model = PPO.load(trained.policy, device="cpu")
    actor = NumpyActor.load(trained.actor)
    env = EdgeCloudEnv(bundle=profiled_bundle)
    obs, _ = env.reset(seed=0)
    seen = [obs]
    for _ in range(300):
        obs, *_ = env.step(actor.act(obs))
        seen.append(obs)
    rng = np.random.default_rng(0)
    noise = rng.uniform(-3, 3, (300, obs.shape[0])).astype(np.float32)
    batch = np.concatenate([np.stack(seen), noise])
    assert check_actor(model, actor, batch)
    for o in batch[:50]:  # one observation at a time, as the edge calls it
        assert np.array_equal(actor.act(o), model.predict(o, deterministic=True)[0])


def test_actor_roundtrip_and_bad_file(tmp_path: Path, trained: TrainResult) -> None:
    actor = NumpyActor.load(trained.actor)
    again = NumpyActor.load(actor.save(tmp_path / "a.npz"))
    x = np.linspace(-1, 1, actor.obs_size, dtype=np.float32)
    assert np.array_equal(actor.act(x), again.act(x))
    np.savez(tmp_path / "bad.npz", x=np.zeros(2))
    with pytest.raises(ValueError, match="exported actor"):
        NumpyActor.load(tmp_path / "bad.npz")


def test_evaluate_cli_writes_contract_json_and_plot(
    trained: TrainResult, profiled_bundle: Bundle, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    args = ["evaluate", str(profiled_bundle.path), "--policy", str(trained.actor),
            "--traces", str(default_traces_dir()), "--split", "all", "--segments", "1",
            "--steps", "80", "--json", str(out), "--plot", str(png), "--no-progress"]  # fmt: skip
    rc = main(args)
    assert rc == 0
    res = json.loads(out.read_text())
    assert set(res) == {"scenario", "traces", "policies", "headroom"}
    room = res["headroom"]  # the learned policy against the best heuristic and the oracle
    assert room["learned_policy"] == "ppo" and room["best_heuristic"] in ev.HEURISTICS
    best = max(res["policies"][h]["timely_accuracy"] for h in ev.HEURISTICS)
    assert room["best_heuristic_timely"] == best
    want = 100 * (res["policies"]["oracle"]["timely_accuracy"] - best)
    assert room["headroom_points"] == pytest.approx(want)
    assert set(room["per_family"]) == set(res["traces"]["families"])
    assert set(res["traces"]) == {"files", "families"}
    assert res["traces"]["families"] == ["belgium4g", "fcc", "hsdpa"]
    assert set(res["policies"]) >= CONTRACT_POLICIES
    for m in res["policies"].values():
        assert set(m) == {*METRICS, "per_family"}
        assert set(m["per_family"]) == set(res["traces"]["families"])
        assert all(set(f) == set(METRICS) for f in m["per_family"].values())
    assert res["scenario"]["deadline_ms"] == 100.0 and res["scenario"]["codec"] == "int8"
    assert png.stat().st_size > 10_000
    assert "oracle_sample" in capsys.readouterr().out


def test_warm_start_clones_the_teacher(profiled_bundle: Bundle) -> None:
    from stable_baselines3 import PPO

    env = EdgeCloudEnv(bundle=profiled_bundle)
    model = PPO("MlpPolicy", env, seed=0, device="cpu")
    edge = np.array([env.n_splits - 1, env.n_exits - 1, 0])
    obs, _ = env.reset(seed=5)
    before = model.predict(obs, deterministic=True)[0]
    cfg = WarmStartConfig(teacher="edge_only", steps=1500, epochs=6, explore=0.5)
    stats = warm_start(model, EdgeCloudEnv(bundle=profiled_bundle), cfg, seed=0)
    assert stats["agreement"] > 0.99 and stats["states"] == 1500
    for _ in range(50):
        obs, *_ = env.step(env.action_space.sample())
        assert np.array_equal(model.predict(obs, deterministic=True)[0], edge)
    assert not np.array_equal(before, edge)  # the untrained policy did something else
