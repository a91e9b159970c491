"""The shipped cards' line on the strategyproof baselines (bench/results_table.baseline_line)."""
import importlib.util
import re

from conftest import REPO as ROOT

_spec = importlib.util.spec_from_file_location("results_table", ROOT / "bench" / "results_table.py")
results_table = importlib.util.module_from_spec(_spec)  # as the other bench tests: no sys.path change
_spec.loader.exec_module(results_table)


def _figures(line):
    return {name: (float(m), float(se)) for name, m, se in re.findall(r"(\w+) (\d+\.\d+) ± (\d+\.\d+)", line)}


def test_baseline_line_says_when_the_net_earns_less():
    ckpt = ROOT / "checkpoints" / "3x2"
    low, high = results_table.baseline_line(ckpt, 0.5), results_table.baseline_line(ckpt, 2.0)
    figs = _figures(low)
    assert set(figs) == {"myerson", "bundle"}
    mean, se = figs["myerson"]
    assert abs(mean - 2 * 17 / 32) < 3 * se + 1e-4  # item-wise Myerson, 3 bidders, closed form per item
    gap = re.search(r"earns (\d+\.\d+) \*\*less\*\* than myerson", low)
    assert gap and abs(float(gap[1]) - (mean - 0.5)) <= 1.5e-4
    assert "**less**" not in high and "more than the best of them (myerson)" in high
    assert _figures(high) == figs  # one estimate per prior (cached), the same in every card
