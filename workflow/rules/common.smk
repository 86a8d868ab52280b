# Paths, round numbers and the exact config subsets each stage depends on.
# Rules pass these subsets through `params:`, which is what makes reruns precise: a change to
# round k's alpha reaches only round k's pseudo labels and what follows them.

import json

from dars.config import scale_range

RUN = config["run"]
RESULTS = f"results/{RUN}"
LOGS = f"logs/{RUN}"
DATA = config["dataset"]["root"]
STUDENT_ROUNDS = list(range(1, len(config["rounds"]) + 1))
ALL_ROUNDS = [0] + STUDENT_ROUNDS


wildcard_constraints:
    r=r"\d+",
    s=r"[1-9]\d*",


def subset(*sections, **extra):
    """JSON of the named top-level config sections (plus extras) for a rule's --config-json."""
    return json.dumps({**{k: config[k] for k in sections}, **extra}, sort_keys=True)


def round_cfg(r):
    """Self-training round r (1-based) as configured."""
    return config["rounds"][int(r) - 1]


def epochs_per_round(r):
    """Epochs the lr schedule of round r depends on (all rounds with a shared schedule)."""
    epochs = [config["train"]["epochs"]] + [x["epochs"] for x in config["rounds"]]
    if config["train"]["schedule"] == "restart":
        return " ".join(map(str, epochs[: int(r) + 1]))
    return " ".join(map(str, epochs))


def scale(r):
    return " ".join(f"{v:g}" for v in scale_range(config, int(r)))
