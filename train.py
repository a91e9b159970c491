"""Train a mechanism: ``python train.py --config NAME_OR_PATH [--workdir DIR] [--set field=value ...] [--resume]``.

NAME is a file in configs/ (``2x2`` or ``2x2.py``) or a path to a config file. The run goes to
``runs/NAME`` unless ``--workdir`` says otherwise; see ``jaxauction/rundir.py`` for its contents.
Config problems print one line and exit with status 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="default", help="config name in configs/ or path to a config .py")
    ap.add_argument("--workdir", help="run directory (default: runs/NAME)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                    help="override a config field (repeatable), e.g. --set batch_size=512 --set hidden=64,64")
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="continue the run in --workdir")
    group.add_argument("--overwrite", action="store_true", help="discard an existing run in --workdir")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)

    from jaxauction.checkpoints import CheckpointError
    from jaxauction.config import ConfigError, validate
    from jaxauction.config_io import apply_overrides, load_config

    try:
        cfg = validate(apply_overrides(load_config(args.config), args.overrides))
    except ConfigError as e:
        print(f"train.py: config error: {e}", file=sys.stderr)
        return 2
    workdir = Path(args.workdir or Path("runs") / cfg.name)

    from jaxauction.training import TrainingDiverged, train_and_evaluate

    try:
        train_and_evaluate(cfg, workdir, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress)
    except (ConfigError, FileExistsError) as e:
        print(f"train.py: {e}", file=sys.stderr)
        return 2
    except CheckpointError as e:
        print(f"train.py: checkpoint error: {e}", file=sys.stderr)
        return 2
    except TrainingDiverged as e:
        print(f"train.py: training diverged: {e}", file=sys.stderr)
        return 1
    print(f"run written to {workdir} (final evaluation: {workdir / 'final_eval.json'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
