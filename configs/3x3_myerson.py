"""3 agents, 3 items, U[0, 1]: a certifiable 3x3 net started at item-wise Myerson (1.594 here)
and trained on a regret budget: the recipe of ``3x2_myerson.py`` with the architecture of
``3x3.py`` (the scale-free "margin" ReLU-stability loss, weight 0.003). Not trained to the end yet
(one CPU run was stopped at step 300: revenue 1.46, PGD regret 0.018 with the hard-Myerson teacher).
"""

import dataclasses
import importlib

from default import distilled

base = importlib.import_module("3x3_teacher").get_config


def get_config():
    return dataclasses.replace(distilled(base(), "softmyerson"), bias_init="uniform", batch_size=1024, steps=3000,
                               stability_loss="margin", stability_weight=0.003,
                               distill_weight=10.0, lambda_init=30.0, distill_pretrain_steps=10000, regret_budget=0.0005)
