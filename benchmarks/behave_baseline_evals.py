"""Unsteered runs of the three evals on the embedded model through the Python API (no artifact: the vector
extraction could not finish on the shared machine in time), small sample counts."""
import json, sys, time
import torch
from emovec.behaviour import engine
from emovec.behaviour.judge import LocalJudge
from emovec.behaviour.runner import BehaveConfig, run_behave
torch.set_num_threads(1)
which = sys.argv[1]
lm = engine.load_model("smollm2-135m")
t = time.time()
if which == "rh":
    cfg = BehaveConfig("reward-hacking", samples=2, attempts=2, max_new_tokens=128, batch_size=14,
                       items=["fast_sum", "is_prime", "median", "c_to_f", "nth_prime", "to_roman", "days_between"],
                       readout_emotions=())
    res = run_behave(lm, None, cfg, "runs/base-rh")
elif which == "bm":
    judge = LocalJudge(lm)
    cfg = BehaveConfig("blackmail", samples=2, max_new_tokens=128, batch_size=8, readout_emotions=())
    res = run_behave(lm, None, cfg, "runs/base-bm", judge=judge)
    json.dump(res, open("runs/eval-blackmail.json", "w"), indent=1)
    cfg = BehaveConfig("sycophancy", samples=1, max_new_tokens=64, batch_size=11, questions=52, readout_emotions=())
    res = run_behave(lm, None, cfg, "runs/base-sy", judge=judge)
    json.dump(res, open("runs/eval-sycophancy.json", "w"), indent=1)
if which == "rh":
    json.dump(res, open("runs/eval-rh.json", "w"), indent=1)
print(which, "done in", round(time.time() - t), "s")
