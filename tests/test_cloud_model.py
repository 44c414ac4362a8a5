"""The simulated shared cloud: the server's batching rule on simulated time, and fleets.

* the same arrival sequence gives the same batches in :class:`CloudModel` as in the real
  :class:`~edgeml.transport.batching.Batcher` (wall clock, sleeping ``run_batch``);
* a fleet of one edge reproduces the single-edge simulator input by input;
* on a shared cloud the load shows up: waits, an Edgent that plans with them, the oracle's
  backlog knowledge.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest

from edgeml.bundle import Bundle
from edgeml.decision.action import Action
from edgeml.decision.cloud import BatchingRule, CloudJob, CloudModel, CloudService
from edgeml.decision.policies import World, make_policy
from edgeml.decision.scenario import Scenario
from edgeml.rl_agent import evaluate as ev
from edgeml.rl_agent.env import EdgeCloudEnv
from edgeml.rl_agent.fleet import EdgeEpisode, Fleet, FleetEnv, fleet_rng
from edgeml.rl_agent.traces import Trace
from edgeml.transport.batching import Batcher, Job

SERVICE_MS = 60.0
WAIT_MS = 40.0
MAX_BATCH = 3
# (name, arrival ms, key, expires after ms): margins of >= 10 ms around every decision.
ARRIVALS = [
    ("a", 0, 0, None),  # idle server, nobody about: runs at once (0-60)
    ("b", 10, 0, None),  # company: waits; a full batch of 3 starts when a ends (60-120)
    ("c", 20, 0, None),
    ("d", 30, 0, None),
    ("e", 100, 0, None),  # waits for company until 140, f joins (140-200)
    ("f", 124, 0, None),
    ("g", 130, 1, None),  # another key: its own batch once e+f are done (200-260)
    ("h", 1400, 0, None),  # > 1 s since company: alone again, at once (1400-1460)
    ("i", 1410, 0, 20),  # its deadline passes while h runs: dropped unrun
    ("j", 1420, 0, None),  # i's wait is over at 1460: j runs (1460-1520)
]
EXPECTED = [["a"], ["b", "c", "d"], ["e", "f"], ["g"], ["h"], ["j"]]


def _flat_service(ms: float) -> CloudService:
    """One block, one exit, ``ms`` per batch whatever its size."""
    return CloudService(
        sizes=np.array([1.0, 32.0]), blocks_ms=np.full((2, 1), ms),
        heads_ms=np.zeros((2, 1)), exits=(1,),
    )  # fmt: skip


def _simulated() -> tuple[list[list[str]], set[str]]:
    model = CloudModel(_flat_service(SERVICE_MS), BatchingRule(MAX_BATCH, WAIT_MS))
    model.keep_batches = True
    expired = set()
    for name, t, key, ttl in ARRIVALS:
        exp = t + ttl if ttl is not None else float("inf")
        model.arrive(CloudJob((key, 0), float(t), 1, expires_ms=exp, owner=name))
    done = model.advance(10_000.0)
    expired = {j.owner for j in done if j.expired}
    return [[j.owner for j in b] for b in model.batches], expired


def _measured() -> tuple[list[list[str]], set[str]]:
    batches: list[list[str]] = []

    def run_batch(key: object, jobs: list[Job]) -> list[None]:
        batches.append([str(j.x) for j in jobs])
        time.sleep(SERVICE_MS / 1000)
        return [None] * len(jobs)

    batcher = Batcher(run_batch, MAX_BATCH, int(WAIT_MS * 1000)).start()
    jobs = []
    t0 = time.perf_counter_ns()
    for name, t, key, ttl in ARRIVALS:
        while time.perf_counter_ns() < t0 + t * 1_000_000:
            time.sleep(0.0005)
        now = time.perf_counter_ns()
        exp = now + ttl * 1_000_000 if ttl is not None else None
        jobs.append(batcher.submit(Job((key, 0), name, 1.0, expires_ns=exp, enqueued_ns=now)))  # type: ignore[arg-type]
    for job in jobs:
        assert job.wait(5.0)
    batcher.close(5.0)
    return batches, {str(j.x) for j in jobs if j.error is not None}


def test_the_simulated_cloud_forms_the_real_batchers_batches() -> None:
    sim_batches, sim_expired = _simulated()
    assert sim_batches == EXPECTED
    assert sim_expired == {"i"}
    for _attempt in range(3):  # wall-clock scheduling on a shared machine: a rare late wake-up
        real_batches, real_expired = _measured()
        if real_batches == sim_batches and real_expired == sim_expired:
            return
    assert (real_batches, real_expired) == (sim_batches, sim_expired)


def test_rows_that_stop_early_leave_the_batch() -> None:
    svc = CloudService(
        sizes=np.array([1.0, 2.0, 4.0]),
        blocks_ms=np.array([[1.0, 1.0, 1.0], [1.5, 1.5, 1.5], [2.0, 2.0, 2.0]]),
        heads_ms=np.array([[0.1, 0.1], [0.2, 0.2], [0.3, 0.3]]),
        exits=(2, 3),
    )
    # From split 0: two rows to block 3, one stopping at block 2 (exit 0) on the way.
    two_deep = svc.batch_ms(0, [(3, False), (3, False)])
    assert two_deep == pytest.approx(1.5 + 1.5 + 1.5 + 0.2)
    mixed = svc.batch_ms(0, [(2, False), (3, False)])
    assert mixed == pytest.approx(1.5 + 1.5 + 0.2 + 1.0 + 0.1)
    assert svc.batch_ms(0, [(3, True)]) == pytest.approx(3.0 + 0.1 + 0.1)  # early: heads run
    assert svc._at(svc.blocks_ms, 0, 8) == pytest.approx(4.0)  # beyond 4: per-row cost


def test_a_lone_request_takes_the_cost_models_cloud_time_and_batches_keep_their_scaling(
    profiled_bundle: Bundle,
) -> None:
    prof = profiled_bundle.profile
    raw = np.asarray(prof["cloud_batch"]["blocks_ms"])
    svc = CloudService.from_profile(prof, cloud_speedup=2.0)
    world = World.from_bundle(profiled_bundle, replace(Scenario(), cloud_speedup=2.0))
    rule = prof.get("rule_overhead_ms", {})
    slack = sum(rule.get(k, 0.0) for k in ("segment", "exit_decide"))
    slack += rule.get("exit_check", 0.0) * len(prof["exits"])
    for split in range(len(prof["blocks_ms"])):
        for e, block in enumerate(svc.exits):
            if block <= split:
                continue
            cost = world.cost.breakdown(split, e, e, True, world.scenario.codec).cloud_ms
            # the same blocks and head; the cost model adds only the exit rule's bookkeeping
            assert 0.0 <= cost - svc.alone_ms(split, block, False) <= slack / 2.0 + 1e-9
    # the table's own growth with the batch is kept, block by block
    for size in (2, 8):
        i = list(prof["cloud_batch"]["batch_sizes"]).index(size)
        np.testing.assert_allclose(svc.blocks_ms[i] / svc.blocks_ms[0], raw[i] / raw[0])


@pytest.fixture(scope="module")
def edges(profiled_bundle: Bundle) -> tuple[Scenario, list[Trace], CloudService]:
    rng = np.random.default_rng(3)
    traces = [
        Trace(f"fam{k}_{i}.csv", np.clip(rng.normal(mu, mu / 2, 300), 0.05, None))
        for k, mu in enumerate((2.0, 8.0)) for i in range(2)
    ]  # fmt: skip
    scenario = replace(Scenario(), edge_slowdown=4.0, episode_steps=60)
    return scenario, traces, CloudService.from_profile(profiled_bundle.profile)


def test_a_fleet_of_one_reproduces_the_single_edge_simulator(
    profiled_bundle: Bundle, edges: tuple[Scenario, list[Trace], CloudService]
) -> None:
    scenario, traces, service = edges
    cfg = ev.EvalConfig(segments=2, episode_steps=60, seed=1)
    env = ev.make_env(scenario, traces, cfg, profiled_bundle)
    episodes = ev.episodes_for(traces, cfg)
    for name in ("edgent", "edgent-load", "oracle"):
        one = ev.run_policy(env, make_policy(name, env.world), episodes)
        fleet = ev.run_fleet(
            [env], service, BatchingRule(), make_policy(name, env.world),
            ev.fleets_for(episodes, 1), seed=1,
        )  # fmt: skip
        for key in ("timely", "latency_ms", "split", "exit", "reward", "stop_exit"):
            np.testing.assert_array_equal(one[key], fleet[key], err_msg=f"{name}: {key}")
        assert (fleet["cloud_wait_ms"] == 0).all()


def test_a_cloud_slower_than_planned_answers_later_by_the_difference(
    profiled_bundle: Bundle, edges: tuple[Scenario, list[Trace], CloudService]
) -> None:
    scenario, traces, service = edges
    cfg = ev.EvalConfig(segments=1, episode_steps=60, seed=1)
    env = ev.make_env(scenario, traces, cfg, profiled_bundle)
    fleets = ev.fleets_for(ev.episodes_for(traces, cfg), 1)
    slow = CloudService.from_profile(profiled_bundle.profile, 0.5)  # twice the profile
    pol = make_policy("cloud_only", env.world)
    planned = ev.run_fleet([env], service, BatchingRule(), pol, fleets, 1)
    late = ev.run_fleet([env], slow, BatchingRule(), pol, fleets, 1, planned=service)
    sent = late["offloaded"].astype(bool)
    assert sent.all() and np.allclose(planned["cloud_wait_ms"], 0.0, atol=1e-9)
    alone = [service.alone_ms(0, env.world.cost.exits[e], False) for e in late["exit"]]
    np.testing.assert_allclose(late["cloud_wait_ms"], alone, rtol=1e-9)  # 2x - 1x
    assert late["latency_ms"].mean() > planned["latency_ms"].mean() + 0.9 * np.mean(alone)


def test_a_shared_cloud_makes_edges_wait_and_edgent_load_backs_off(
    profiled_bundle: Bundle, edges: tuple[Scenario, list[Trace], CloudService]
) -> None:
    scenario, traces, service = edges
    prof = profiled_bundle.profile
    first = prof["blocks_ms"][0] + prof["heads_ms"][str(prof["exits"][0])]
    # An edge whose first exit takes 60 ms and a fast link: Edgent offloads for the last
    # exit's accuracy while it plans with an idle cloud.
    scenario = replace(scenario, edge_slowdown=60.0 / first, rtt_ms=10.0)
    # A cloud that gains nothing from batching and takes 25 ms a request: eight edges at
    # 10 inputs/s offer it twice the work it can do.
    k = 25.0 / (service.blocks_ms[0].sum() + service.heads_ms[0].sum())
    per_row = service.sizes[:, None] * k
    slow = replace(
        service, blocks_ms=service.blocks_ms[:1] * per_row, heads_ms=service.heads_ms[:1] * per_row
    )
    fast = np.random.default_rng(4)
    traces = [Trace(f"fast_{i}.csv", fast.uniform(30.0, 60.0, 300)) for i in range(4)]
    cfg = ev.EvalConfig(segments=2, episode_steps=60, seed=1)
    env = ev.make_env(scenario, traces, cfg, profiled_bundle)
    fleets = ev.fleets_for(ev.episodes_for(traces, cfg), 8)
    assert len(fleets) == 1 and len({(e.trace, e.seed) for e in fleets[0]}) == 8
    envs = [env] + [ev.make_env(scenario, traces, cfg, profiled_bundle) for _ in range(7)]
    out = {}
    for name in ("cloud_only", "edgent", "edgent-load"):
        rec = ev.run_fleet(envs, slow, BatchingRule(), make_policy(name, env.world), fleets, 1)
        out[name] = (rec["cloud_wait_ms"].mean(), rec["timely"].mean(), rec["split"].mean())
    assert out["cloud_only"][0] > 20.0  # eight edges queue on a slow cloud
    # Planning with the measured wait: less waiting, deeper splits, more answers in time.
    assert out["edgent-load"][0] < out["edgent"][0]
    assert out["edgent-load"][1] > out["edgent"][1]


def test_fleet_env_steps_one_learning_edge_among_others(
    profiled_bundle: Bundle, edges: tuple[Scenario, list[Trace], CloudService]
) -> None:
    scenario, traces, service = edges
    world = EdgeCloudEnv(scenario, bundle=profiled_bundle, traces=traces).world
    others = make_policy("cloud_only", world)
    env = FleetEnv(
        lambda: EdgeCloudEnv(scenario, bundle=profiled_bundle, traces=traces),
        service, sizes=(4,), others=others.act,
    )  # fmt: skip
    obs, info = env.reset(seed=0)
    assert info["edges"] == 4 and env.observation_space.contains(obs)
    steps, done = 0, False
    while not done:
        obs, reward, term, trunc, info = env.step(env.action_space.sample())
        done, steps = term or trunc, steps + 1
        assert np.isfinite(reward) and info["edge"] == 0
    assert steps == scenario.episode_steps


def test_an_edge_learns_the_clouds_load_from_replies_not_from_giving_up(
    profiled_bundle: Bundle, edges: tuple[Scenario, list[Trace], CloudService]
) -> None:
    """As the daemon: a reply carries the load fields; an offload given up on carries none
    (the edge keeps what it knew), so one lost request does not shut the cloud out."""
    from edgeml.decision.cloud import CloudReply
    from edgeml.decision.observation import CLOUD_SMOOTHING

    scenario, traces, _ = edges
    env = EdgeCloudEnv(scenario, bundle=profiled_bundle, traces=traces[1:2])
    env.reset(seed=0)
    offload = np.array([0, env.n_exits - 1, 0])
    p = env.begin(offload)
    assert p.sent
    _, _, _, _, info = env.finish(p, CloudReply(400.0, 400.0, 9, expired=True))
    assert info["where"] == "fallback" and env.know.cloud_wait_ms == 0.0
    p = env.begin(offload)
    env.finish(p, CloudReply(5.0, 8.0, 3))
    assert env.know.cloud_wait_ms == pytest.approx(CLOUD_SMOOTHING * 8.0)
    assert env.know.cloud_load == 3


def test_an_edge_that_stays_local_learns_the_clouds_load_from_its_probes(
    profiled_bundle: Bundle, edges: tuple[Scenario, list[Trace], CloudService]
) -> None:
    """As the daemon's prober: a probe is a request to the shared cloud (it queues and
    batches with the others' offloads) and its reply's load fields reach the edge, so an
    edge that backed off still sees the cloud fill and empty. Edge 0 stays local among
    seven edges that offload everything to a cloud 20x slower than profiled."""
    scenario, traces, service = edges
    scenario = replace(scenario, probe_interval_s=0.5)
    envs = [EdgeCloudEnv(scenario, bundle=profiled_bundle, traces=traces) for _ in range(8)]
    world = envs[0].world
    local, cloud = make_policy("edge_only", world), make_policy("cloud_only", world)
    slow = CloudService.from_profile(profiled_bundle.profile, 0.05)
    fleet = Fleet(envs, slow, BatchingRule(), planned=service)
    eps = [EdgeEpisode(traces[i % len(traces)].name, 10.0 * i, i) for i in range(8)]
    fleet.reset(eps, fleet_rng(0))
    fleet.cloud.keep_batches = True
    seen: list[tuple[float, float]] = []

    def decide(i: int, env: EdgeCloudEnv) -> Action:
        if i == 0:
            seen.append((env.know.cloud_wait_ms, env.know.cloud_load))
            return env.act(local)
        return env.act(cloud)

    fleet.play(decide, lambda i, r, info: None)
    waits, loads = np.array(seen).T
    assert waits.max() > 20.0 and loads.max() >= 3  # the others' queue, seen by probing
    # edge 0 sends nothing but probes, and the cloud ran them at the probe split
    probes = [j for b in fleet.cloud.batches for j in b if j.owner.edge == 0]
    assert len(probes) >= 5
    assert {j.key for j in probes} == {(envs[0].probe_split, envs[0].n_exits - 1)}
