"""Behaviour evaluations under steering and monitoring (paper §6): reward hacking on impossible code,
blackmail in the SummitBridge scenario, sycophancy vs harshness.

```python
from emovec.behaviour import BehaveConfig, conditions_for, run_behave
config = BehaveConfig("reward-hacking", conditions_for(sweep=["desperate"], strengths=[-0.05, 0, 0.05]))
result = run_behave(model, vecs, config, "runs/x/behaviour-rh")   # rollouts.jsonl + results.json
```
Every import of the rest of emovec goes through `emovec.behaviour.engine`.
"""

from emovec.behaviour.rollouts import Condition, conditions_for, parse_steer
from emovec.behaviour.runner import EVALS, BehaveConfig, plan, run_behave
from emovec.behaviour.sandbox import Limits, Sandbox, SandboxResult
from emovec.behaviour.tasks import Task, load_tasks, run_tests

__all__ = ["EVALS", "BehaveConfig", "Condition", "Limits", "Sandbox", "SandboxResult", "Task", "conditions_for",
           "load_tasks", "parse_steer", "plan", "run_behave", "run_tests"]
