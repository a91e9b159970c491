"""2 agents, 2 items, U[0, 1]: the paper's 2x2 "architecture 2" (3 ReLU layers of 128, sparsemax,
fractional hard-sigmoid payment, ReLU-stability regularizer). Paper: batch 20000, lr 0.01."""
import dataclasses

from default import get_config as base


def get_config():
    return dataclasses.replace(base(), n_agents=2, n_items=2, hidden=(128, 128, 128), batch_size=4096, steps=10000)
