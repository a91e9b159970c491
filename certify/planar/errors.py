"""The planar method's errors: the method does not apply, or it could not prove a bound."""

_MIP_HINT = "use a MIP solver (--solver auto)"


class PlanarError(ValueError):
    """The mechanism or box is outside what the planar method handles, or the float64 enumeration
    could not resolve the network's kinks (no bound is proven)."""


class PlanarTimeout(RuntimeError):
    """The enumeration passed its deadline (no bound is proven)."""

