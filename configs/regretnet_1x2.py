"""1x2 RegretNet as originally published (Duetting et al. 2019; the trained nets of
``../shared/optimaler``): two separate tanh towers of widths (100, 100), a softmax allocation and
the logistic fractional payment, no ReLU-stability regularizer. Certify it with ``--solver bab``
(the MIP and planar certifiers need ReLUs). The optimizer settings are the default's.
"""
import dataclasses

from default import get_config as base


def get_config():
    return dataclasses.replace(base(), hidden=(100, 100), activation="tanh", towers="separate",
                               allocation="softmax", payment="fractional_sigmoid", stability_weight=0.0)
