"""Config files and ``field=value`` overrides (the :class:`~jaxauction.config.Config` itself and its
validation live in :mod:`jaxauction.config`).

A config file (``configs/NAME.py``) defines ``get_config() -> Config``. Variants start from
another file and change a few fields::

    # configs/2x2_noreg.py
    import dataclasses
    from default import get_config as base     # configs/ is on sys.path while a config loads

    def get_config():
        return dataclasses.replace(base(), n_agents=2, stability_weight=0.0)

``load_config("2x2")`` (or ``"2x2.py"``) reads ``configs/2x2.py`` of this repository; any other
path to a ``.py`` file works too. ``apply_overrides(cfg, ["batch_size=512", "hidden=64,64"])``
parses each value by the field's declared type. Every error is a :class:`ConfigError` whose
message names the offending file or field.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import sys
import typing
from pathlib import Path
from typing import Sequence

from jaxauction.config import REPO, Config, ConfigError, is_tuple_type, optional_inner

CONFIG_DIR = REPO / "configs"


# ---- loading -------------------------------------------------------------------------------

def resolve_config_path(name_or_path: str | Path) -> Path:
    """``"2x2"``/``"2x2.py"`` -> ``configs/2x2.py`` of this repo; an existing file path as is."""
    p = Path(name_or_path)
    if p.is_file():
        return p.resolve()
    stem = p.name[:-3] if p.name.endswith(".py") else p.name
    if len(p.parts) == 1:
        cand = CONFIG_DIR / f"{stem}.py"
        if cand.is_file():
            return cand
        avail = sorted(f.stem for f in CONFIG_DIR.glob("*.py"))
        raise ConfigError(f"config {str(name_or_path)!r}: no such file, and no {cand}; available: {avail}")
    raise ConfigError(f"config {str(name_or_path)!r}: no such file")


def call_file_getter(path: Path, getter: str, error: type, label: str):
    """Run the Python file ``path`` and return ``getter()`` from it (config and sweep files).

    The file's directory is on ``sys.path`` while it runs (so it may import its siblings); the
    modules imported that way are dropped afterwards, so files from different directories never
    shadow each other. A missing getter or any exception in the file is raised as
    ``error(f"{label}: ...")``.
    """
    before = set(sys.modules)
    sys.path.insert(0, str(path.parent))
    prefix = f"_jaxauction_{getter}_"
    try:
        spec = importlib.util.spec_from_file_location(f"{prefix}{abs(hash(str(path)))}", path)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
            if not callable(getattr(module, getter, None)):
                raise error(f"{label}: defines no {getter}()")
            return getattr(module, getter)()
        except error:
            raise
        except Exception as e:  # a broken file: say which one
            raise error(f"{label}: {type(e).__name__}: {e}") from e
    finally:
        sys.path.remove(str(path.parent))
        for k in set(sys.modules) - before:
            f = getattr(sys.modules[k], "__file__", None) or ""
            if k.startswith(prefix) or Path(f).parent == path.parent:
                del sys.modules[k]


def load_config(name_or_path: str | Path) -> Config:
    """Load ``get_config()`` from a config file (see :func:`resolve_config_path`) by
    :func:`call_file_getter`, so a variant can ``from default import get_config as base``. The
    returned config's ``name`` is the file's stem.
    """
    path = resolve_config_path(name_or_path)
    cfg = call_file_getter(path, "get_config", ConfigError, f"config {path}")
    if not isinstance(cfg, Config):
        raise ConfigError(f"config {path}: get_config() returned {type(cfg).__name__}, not Config")
    return dataclasses.replace(cfg, name=path.stem)


# ---- overrides -----------------------------------------------------------------------------

_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def _parse_scalar(field: str, tp, text: str):
    text = text.strip()
    try:
        if tp is bool:
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise ValueError("expected true/false")
        if tp is int:
            return int(text)
        if tp is float:
            return float(text)
        if tp is str:
            return text
    except ValueError as e:
        raise ConfigError(f"{field}: cannot parse {text!r} as {tp.__name__} ({e})") from None
    raise ConfigError(f"{field}: unsupported field type {tp}")


def parse_value(field: str, tp, text: str):
    """Parse ``text`` as a value of type ``tp`` (int, float, bool, str, Optional[X], tuple[X, ...])."""
    inner = optional_inner(tp)
    if inner is not None:
        return None if text.strip().lower() in ("none", "null", "") else parse_value(field, inner, text)
    if is_tuple_type(tp):
        elem = typing.get_args(tp)[0]
        parts = [s for s in text.replace("(", "").replace(")", "").split(",") if s.strip()]
        if not parts:
            raise ConfigError(f"{field}: expected a comma-separated list of {elem.__name__}, got {text!r}")
        return tuple(_parse_scalar(field, elem, s) for s in parts)
    return _parse_scalar(field, tp, text)


def apply_overrides(cfg: Config, overrides: Sequence[str]) -> Config:
    """Apply ``["field=value", ...]``; values are parsed by the field's type (tuples: ``a,b,c``)."""
    hints = typing.get_type_hints(Config)
    changes = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected field=value")
        key, text = item.split("=", 1)
        key = key.strip()
        if key not in hints:
            near = [f for f in hints if key.lower() in f or f in key.lower()]
            raise ConfigError(f"{key}: unknown config field" + (f" (did you mean {near}?)" if near else ""))
        changes[key] = parse_value(key, hints[key], text)
    return dataclasses.replace(cfg, **changes)
