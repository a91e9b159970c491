"""2 agents, 2 items, U[0, 1]: the paper's 2x2 "architecture 2" (3 ReLU layers of 128, sparsemax,
fractional hard-sigmoid payment, ReLU-stability regularizer). Paper: batch 20000, lr 0.01.

rho 3 with lambda_init 1 (the 1x2 default is rho 30, lambda_init 5): a softer regret penalty buys
revenue with a little regret. On one shared H200 (bench/gpu_train_all.sh, 5530 steps in 420 s):
revenue 0.890, mean certified regret 0.0040 (rho 30: 0.847; rho 10: 0.861). Train it on a GPU:
a 2x2 step at the paper's batch 20000 takes ~4 s on a 2-core CPU even without restarts
(BENCHMARKS.md).
"""
import dataclasses

from default import get_config as base


def get_config():
    return dataclasses.replace(base(), n_agents=2, n_items=2, hidden=(128, 128, 128), batch_size=4096, steps=14000,
                               rho=3.0, lambda_init=1.0)
