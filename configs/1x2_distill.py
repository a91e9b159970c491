"""1x2 "architecture 3": sparsemax + free (clipped linear) payment, distilled from runs/1x2_teacher.

Train the teacher first: ``python train.py --config 1x2_teacher``. Free payments are not IR by
construction, so the IR penalty is on (paper: mu0 = 20, rho_ir += 5 every 5 steps).
"""

from default import distilled
from default import get_config as base


def get_config():
    return distilled(base(), "runs/1x2_teacher")
