"""Sweep files: finding, loading and validating one, and resolving it into its runs (:class:`Run`,
named; the format is in :mod:`jaxauction.sweep`)."""
from __future__ import annotations

import dataclasses
import itertools
import re
from pathlib import Path
from typing import Optional

from jaxauction.config import REPO, Config, ConfigError, validate
from jaxauction.config_io import call_file_getter

SWEEP_DIR = REPO / "configs" / "sweeps"
ENTRY_KEYS = frozenset({"config", "name", "seeds", "grid", "set"})


class SweepError(ValueError):
    """A bad sweep file, bad arguments, or an executor that cannot start (the CLI exits 2)."""


@dataclasses.dataclass(frozen=True)
class Run:
    """One run of a sweep: its name (= directory in OUT), group, base config, overrides, config."""
    name: str
    group: str
    config: str
    seed: int
    grid: tuple[str, ...]       # this run's grid overrides, FIELD=VALUE (fields sorted)
    overrides: tuple[str, ...]  # everything applied to the base config: set + grid + seed
    cfg: Config

    def to_dict(self) -> dict:
        return {"name": self.name, "group": self.group, "config": self.config, "seed": self.seed,
                "grid": list(self.grid), "overrides": list(self.overrides), "resolved": self.cfg.to_dict()}

def resolve_sweep_path(name_or_path: str | Path) -> Path:
    """An existing file as is, else ``configs/sweeps/NAME.py`` (``NAME`` or ``NAME.py``)."""
    p = Path(name_or_path)
    if p.is_file():
        return p.resolve()
    if len(p.parts) == 1:
        cand = SWEEP_DIR / (p.name if p.name.endswith(".py") else f"{p.name}.py")
        if cand.is_file():
            return cand
    raise SweepError(f"sweep file {str(name_or_path)!r}: no such file")


def load_sweep_dict(path: Path) -> dict:
    """Run the sweep file and return its ``get_sweep()`` (its directory on sys.path meanwhile)."""
    path = Path(path)
    sweep = call_file_getter(path, "get_sweep", SweepError, str(path))
    if not isinstance(sweep, dict):
        raise SweepError(f"{path}: get_sweep() returned {type(sweep).__name__}, not a dict")
    return sweep


def override_text(value) -> str:
    """A grid value as ``--set`` writes it: tuples ``a,b``, bools ``true``, None ``none``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return ",".join(override_text(v) for v in value)
    return str(value)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._,=+-]", "_", text)


def _entries(sweep: dict, where: str) -> list[dict]:
    top = dict(sweep)
    subs = top.pop("runs", None)
    unknown = sorted(set(top) - ENTRY_KEYS)
    if unknown:
        raise SweepError(f"{where}: unknown key(s) {unknown} (known: {sorted(ENTRY_KEYS | {'runs'})})")
    if subs is None:
        return [top]
    if not isinstance(subs, (list, tuple)) or not subs:
        raise SweepError(f"{where}: 'runs' must be a non-empty list of dicts")
    out = []
    for i, sub in enumerate(subs):
        if not isinstance(sub, dict):
            raise SweepError(f"{where}: runs[{i}] is a {type(sub).__name__}, not a dict")
        unknown = sorted(set(sub) - ENTRY_KEYS)
        if unknown:
            raise SweepError(f"{where}: runs[{i}]: unknown key(s) {unknown} (known: {sorted(ENTRY_KEYS)})")
        merged = {**top, **sub}
        if "set" in top and "set" in sub:
            merged["set"] = [*_as_list(top["set"], f"{where}: set"), *_as_list(sub["set"], f"{where}: runs[{i}].set")]
        if isinstance(top.get("grid"), dict) and isinstance(sub.get("grid"), dict):
            merged["grid"] = {**top["grid"], **sub["grid"]}
        out.append(merged)
    return out


def _as_list(v, where: str) -> list:
    if isinstance(v, str) or not isinstance(v, (list, tuple)):
        raise SweepError(f"{where}: expected a list, got {v!r}")
    return list(v)


def resolve_sweep(sweep: dict, where: str = "sweep", base_dir: Optional[Path] = None) -> list[Run]:
    """The runs of a sweep dict (see the module docstring); every config resolved and validated.

    ``base_dir``: a relative ``config`` path is looked up there first (the sweep file's directory).
    Raises :class:`SweepError` naming the entry or run at fault.
    """
    from jaxauction.config_io import apply_overrides, load_config

    runs: list[Run] = []
    bases: dict[str, Config] = {}
    for i, e in enumerate(_entries(sweep, where)):
        at = where if "runs" not in sweep else f"{where}: runs[{i}]"
        config = e.get("config")
        if not isinstance(config, str) or not config:
            raise SweepError(f"{at}: 'config' (a config name or path, as train.py --config) is required")
        if base_dir is not None and not Path(config).is_absolute() and (base_dir / config).is_file():
            config = str((base_dir / config).resolve())
        if config not in bases:
            try:
                bases[config] = load_config(config)
            except ConfigError as err:
                raise SweepError(f"{at}: {err}") from None
        sets = [str(s) for s in _as_list(e.get("set", []), f"{at}: set")]
        if any("=" not in s for s in sets):
            raise SweepError(f"{at}: set: expected FIELD=VALUE strings, got {sets}")
        grid = e.get("grid")
        if grid is None:
            grid = {}
        elif not isinstance(grid, dict) or not grid:
            raise SweepError(f"{at}: grid: empty or not a dict (leave 'grid' out for no grid)")
        for k, vals in grid.items():
            if k == "seed":
                raise SweepError(f"{at}: grid: use 'seeds' for the seed")
            if isinstance(vals, (str, bytes)) or not isinstance(vals, (list, tuple)) or not vals:
                raise SweepError(f"{at}: grid: {k}: expected a non-empty list of values, got {vals!r}")
        seeds = e.get("seeds")
        if seeds is not None:
            if not isinstance(seeds, (list, tuple)) or not seeds or not all(
                    isinstance(s, int) and not isinstance(s, bool) for s in seeds):
                raise SweepError(f"{at}: seeds: expected a non-empty list of ints, got {seeds!r}")
            if len(set(seeds)) != len(seeds):
                raise SweepError(f"{at}: seeds: repeated seed in {list(seeds)}")
        prefix = e.get("name") or Path(config).stem
        if not isinstance(prefix, str):
            raise SweepError(f"{at}: name: expected a string, got {prefix!r}")
        fields = sorted(grid)
        for combo in itertools.product(*(grid[k] for k in fields)):
            point = tuple(f"{k}={override_text(v)}" for k, v in zip(fields, combo))
            for seed in (seeds if seeds is not None else [None]):
                overrides = [*sets, *point] + ([f"seed={seed}"] if seed is not None else [])
                group = "-".join(_safe(s) for s in (prefix, *point))
                try:
                    cfg = validate(apply_overrides(bases[config], overrides))
                except ConfigError as err:
                    raise SweepError(f"{at}: run {group}: {err}") from None
                runs.append(Run(f"{group}-seed={cfg.seed}", group, config, cfg.seed, point, tuple(overrides), cfg))
    seen: dict[str, int] = {}
    for r in runs:
        seen[r.name] = seen.get(r.name, 0) + 1
    dup = sorted(n for n, c in seen.items() if c > 1)
    if dup:
        raise SweepError(f"{where}: several runs are named {dup} (entries differing only in 'set' need "
                         f"different 'name's)")
    return runs


def load_sweep(name_or_path: str | Path) -> tuple[Path, list[Run]]:
    """Resolve a sweep file (:func:`resolve_sweep_path`) and its runs."""
    path = resolve_sweep_path(name_or_path)
    return path, resolve_sweep(load_sweep_dict(path), where=str(path), base_dir=path.parent)
