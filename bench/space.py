"""Whole-space certificates of several nets (``certify.py --space`` for each), and one table.

For each checkpoint: every agent's worst regret over the prior's support, ``lower`` (a replayed
pair) .. ``upper_exact`` (proven, exact function) and ``upper`` (the float32 claim), the gap reached,
boxes bounded and seconds, with the per-profile figures of the same net beside it when its
results directory is given (``--points-dir``: certified regret mean/max of a certify.py run), so the
consistency "whole-space lower >= every per-profile certified regret" can be read off.

    python bench/space.py --out results/space --gap 1e-4 --time-limit 1500 checkpoints/1x2_reg ...
    python bench/space.py --out results/space --gap 1e-3 --time-limit 3600 checkpoints/2x2_reg

Each net's run is a normal ``--space`` directory (``OUT/NAME/``: resumable); the table is
``OUT/summary.md``, built from every ``OUT/*/space.json``.
"""
from __future__ import annotations

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
from pathlib import Path  # noqa: E402


def name_of(ckpt: str) -> str:
    p = Path(ckpt)
    return p.stem if p.suffix == ".npz" else p.name


def table(out: Path) -> str:
    rows = ["| net | agent | lower | upper (exact) | upper (float32) | gap (exact) | status | boxes | seconds |",
            "|:--|---:|---:|---:|---:|---:|:--|---:|---:|"]
    for f in sorted(out.glob("*/space.json")):
        doc = json.loads(f.read_text())
        for r in doc["agents"]:
            rows.append(f"| {f.parent.name} | {r['agent']} | {r['lower']:.6f} | {r['upper_exact']:.6f} | "
                        f"{r['upper']:.6f} | {r['gap_exact']:.2e} | {r['status']} | {r['boxes']} | {r['seconds']:.0f} |")
    return "\n".join(rows) + f"\n\n{platform.node()}: {os.cpu_count()} CPU cores, JAX on CPU\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("ckpts", nargs="*")
    ap.add_argument("--out", required=True)
    ap.add_argument("--gap", type=float, default=1e-4)
    ap.add_argument("--time-limit", type=float, default=1500.0, help="per agent, seconds")
    ap.add_argument("--agents", default="all")
    args = ap.parse_args(argv)
    from certify.campaign.space_run import run_space

    out = Path(args.out)
    for ck in args.ckpts:
        run_space(ck, out / name_of(ck), agents=args.agents, gap=args.gap, time_limit=args.time_limit)
    text = table(out)
    (out / "summary.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
