"""2x2 RegretNet as originally published (Duetting et al. 2019; the trained nets of
``../shared/optimaler``): two separate tanh towers of widths (100, 100), one for the allocation and
one for the payment, a softmax allocation and the logistic fractional payment, no ReLU-stability
regularizer (it is for ReLUs). The MIP and planar certifiers need ReLUs: certify it with
``--solver bab``. The optimizer settings are those of ``2x2``.
"""
import dataclasses
import importlib

base = importlib.import_module("2x2").get_config


def get_config():
    return dataclasses.replace(base(), hidden=(100, 100), activation="tanh", towers="separate",
                               allocation="softmax", payment="fractional_sigmoid", stability_weight=0.0)
