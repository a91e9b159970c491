"""2x2 teacher: softmax + logistic fractional payment, no regularizer."""
import dataclasses
import importlib

base = importlib.import_module("2x2").get_config


def get_config():
    return dataclasses.replace(base(), allocation="softmax", payment="fractional_sigmoid", stability_weight=0.0)
