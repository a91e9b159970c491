"""1x2 teacher for distillation: softmax allocation + logistic fractional payment (RegretNet style).

Trained without the ReLU-stability regularizer (it is never certified itself).
"""
import dataclasses

from default import get_config as base


def get_config():
    return dataclasses.replace(base(), allocation="softmax", payment="fractional_sigmoid", stability_weight=0.0)
