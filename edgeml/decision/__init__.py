"""The decision core: one world model for the simulator, the baselines and the edge daemon.

Torch-free (the edge runs without torch). It holds the one :class:`~.scenario.Scenario`,
the :class:`~.action.Action` and its space, the outcome rule of an action
(:mod:`.outcome`: deadline, grace, local fallback), what the edge knows
(:class:`~.observation.EdgeKnowledge`, which builds the policy's observation), every policy
behind one interface and registry (:mod:`.policies`) and one ``summarize`` (:mod:`.metrics`).
The gym env (:mod:`edgeml.rl_agent.env`) and the daemon (:mod:`edgeml.runtime`) are
adapters that feed it simulated or real measurements.
"""
