"""3 agents, 3 items, U[0, 1]: the teacher for 3x3.py (softmax + logistic fractional payment, no regularizer).

Train it first: ``python train.py --config 3x3_teacher`` (writes runs/3x3_teacher).
"""
import dataclasses

from default import get_config as base


def get_config():
    return dataclasses.replace(base(), n_agents=3, n_items=3, hidden=(128, 128, 128), allocation="softmax",
                               payment="fractional_sigmoid", stability_weight=0.0, batch_size=4096, steps=10000)
