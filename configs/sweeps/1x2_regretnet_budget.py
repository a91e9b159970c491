"""1x2, RegretNet's own architecture (``configs/regretnet_1x2.py``: tanh towers, softmax, logistic
fractional payment) trained on three regret budgets: the 1x2 frontier of issue 14.

    python sweep.py 1x2_regretnet_budget --executor vmap   # one vmapped program -> runs/sweeps/1x2_regretnet_budget/

``regret_budget`` R lets each run spend a mean PGD regret per agent of R instead of driving it to
zero (``jaxauction/lagrangian.py``); the three budgets trace revenue against regret. Batch 1024
and one corner-biased misreport restart keep a step cheap enough for a 2-core CPU; the runs
differ only in a continuous field, so ``--executor vmap`` trains them as one program. Certify
each with ``python certify.py --ckpt runs/sweeps/1x2_regretnet_budget/RUN --solver bab --points 200``.
"""


def get_sweep():
    return {
        "config": "regretnet_1x2",
        "seeds": [0],
        "grid": {"regret_budget": [0.0002, 0.0005, 0.001]},
        "set": ["batch_size=1024", "misreport_restarts=1", "steps=8000", "eval_every=2000",
                "final_eval_steps=1000"],
    }
