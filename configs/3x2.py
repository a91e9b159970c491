"""3 agents, 2 items, U[0, 1]: the paper's Table 2 architecture for larger settings ("architecture 3"):
sparsemax + free (clipped linear) payment with the IR penalty and the ReLU-stability regularizer,
distilled from the teacher run runs/3x2_teacher (train ``3x2_teacher`` first). To train from
scratch without a teacher: ``--set teacher=`` (the regret/IR/stability terms still apply).
"""

import importlib

from default import distilled

base = importlib.import_module("3x2_teacher").get_config


def get_config():
    return distilled(base(), "runs/3x2_teacher")
