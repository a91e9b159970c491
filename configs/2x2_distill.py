"""2x2 "architecture 3": sparsemax + free payment distilled from runs/2x2_teacher, IR penalty on."""

import importlib

from default import distilled

base = importlib.import_module("2x2").get_config


def get_config():
    return distilled(base(), "runs/2x2_teacher")
