"""2x2 without the ReLU-stability regularizer."""
import dataclasses
import importlib

base = importlib.import_module("2x2").get_config


def get_config():
    return dataclasses.replace(base(), stability_weight=0.0)
