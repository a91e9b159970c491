"""2x2 "architecture 3": sparsemax + free payment distilled from runs/2x2_teacher, IR penalty on."""
import dataclasses
import importlib

base = importlib.import_module("2x2").get_config


def get_config():
    return dataclasses.replace(base(), payment="free", ir_penalty=True, teacher="runs/2x2_teacher", distill_weight=1.0)
