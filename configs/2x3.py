"""2 agents, 3 items, U[0, 1]: the paper's Table 2 architecture for larger settings ("architecture 3"):
sparsemax + free (clipped linear) payment with the IR penalty and the ReLU-stability regularizer,
distilled from the teacher run runs/2x3_teacher (train ``2x3_teacher`` first). To train from
scratch without a teacher: ``--set teacher=`` (the regret/IR/stability terms still apply).

Uniform (PyTorch-style) initial biases, the scale-free "margin" ReLU-stability loss (weight 0.003)
instead of the paper's -tanh(1 + l u), batch 1024, 5000 steps (180 s on a shared H200; BENCHMARKS.md,
fifth pass): far fewer unstable ReLUs per bid box, hence fast certification.
"""

import dataclasses
import importlib

from default import distilled

base = importlib.import_module("2x3_teacher").get_config


def get_config():
    return dataclasses.replace(distilled(base(), "runs/2x3_teacher"), bias_init="uniform", batch_size=1024, steps=5000,
                               stability_loss="margin", stability_weight=0.003)
