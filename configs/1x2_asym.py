"""1 agent, 2 items, v1 ~ U[4, 16], v2 ~ U[4, 7] (RegretNet's asymmetric setting; optimal revenue ~9.781).

Values are ~10x larger than U[0, 1], so the misreport step size scales with the support width.
"""
import dataclasses

from default import get_config as base


def get_config():
    return dataclasses.replace(base(), prior_low=(4.0, 4.0), prior_high=(16.0, 7.0), misreport_lr=0.2)
