"""The shipped cards' line on the strategyproof baselines (bench/results_table.baseline_line)."""
import importlib.util
import json
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
    ama_rev = json.loads((ROOT / "checkpoints" / "3x2_ama" / "final_eval.json").read_text())["revenue"]
    assert f"the shipped affine maximizer `3x2_ama` ({ama_rev:.4f}, regret 0 by construction)" in low
    from jaxauction import checkpoints
    assert results_table.shipped_amas(checkpoints.load_with_prior(ckpt)[3]) == [("3x2_ama", ama_rev)]
    assert results_table.shipped_amas(checkpoints.load_with_prior(ROOT / "checkpoints" / "2x2_reg")[3]) == [
        ("2x2_ama", json.loads((ROOT / "checkpoints" / "2x2_ama" / "final_eval.json").read_text())["revenue"])]
    assert _figures(high) == figs  # one estimate per prior (cached), the same in every card


def test_paired_line_reads_the_frontier(tmp_path):
    """The card's paired differences are the frontier's, for the net named, and absent without it."""
    f = tmp_path / "frontier.json"
    comp = {"points": 20000, "seed": 0, "comparisons": {"1x2": {"ours": [
        {"net": "a", "vs_baselines": {"myerson": {"diff": 0.07, "se": 0.002}, "bundle": {"diff": -0.0125, "se": 0.0006}},
         "vs_published": [{"net": "pub", "regret": 0.0019, "diff": 0.002, "se": 0.0005}]}]}}}
    f.write_text(json.dumps(comp))
    line = results_table.paired_line("a", f)
    assert "-0.0125 ± 0.0006 against bundle" in line and "+0.0700 ± 0.0020 against myerson" in line
    assert "+0.0020 ± 0.0005 against pub (its certified regret 0.00190)" in line and "20000 profiles" in line
    assert results_table.paired_line("b", f) == ""
    assert results_table.paired_line("a", tmp_path / "missing.json") == ""


def test_shipped_cards_carry_the_frontier_pairing():
    """Every net the shipped frontier compares has that comparison on its card (cards regenerated)."""
    comp = json.loads(results_table.FRONTIER.read_text())
    for c in comp["comparisons"].values():
        for r in c["ours"]:
            card = (ROOT / "checkpoints" / r["net"] / "CARD.md").read_text()
            assert results_table.paired_line(r["net"]) in card, r["net"]
