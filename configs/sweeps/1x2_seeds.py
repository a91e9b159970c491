"""1x2, three seeds, with and without the ReLU-stability regularizer: 6 runs of configs/1x2.py.

    python sweep.py 1x2_seeds                              # local worker processes -> runs/sweeps/1x2_seeds/
    python sweep.py 1x2_seeds --executor ray --workers 6   # one Ray task per run

Each run is ``python train.py --config 1x2 --set stability_weight=W --set seed=S`` (1000 steps,
about 10 minutes on 2 cores); runs/sweeps/1x2_seeds/summary.md compares revenue, PGD regret and
IR violations, mean and std over the seeds. The format: jaxauction/sweep/__init__.py.
"""


def get_sweep():
    return {
        "config": "1x2",
        "seeds": [0, 1, 2],
        "grid": {"stability_weight": [0.0, 0.0025]},
        "set": [],  # overrides for every run, e.g. "steps=2000", "max_seconds=600"
    }
