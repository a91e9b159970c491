"""1x2 without the ReLU-stability regularizer (the paper's unregularized comparison)."""
import dataclasses

from default import get_config as base


def get_config():
    return dataclasses.replace(base(), stability_weight=0.0)
