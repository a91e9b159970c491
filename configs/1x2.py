"""1 agent, 2 items, U[0, 1]: the default (sparsemax + fractional payment, regularized)."""
from default import get_config  # noqa: F401  (this file *is* the default setting)
