"""The published claims the recipes measure, each with the check that judges a recipe's findings.json against it.

A check turns the findings of one recipe at one scale into (what we measured, a verdict: reproduced / partly /
not reproduced). `groklab reproductions` (experiments/reproductions.py) lays them out as the scoreboard; a
recipe's page shows the claims of that recipe at the scale it ran.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Check = Callable[[dict[str, Any]], tuple[str, str]]


@dataclass(frozen=True)
class Claim:
    source: str
    """Paper and figure."""
    paper: str
    """The published number or ordering."""
    recipe: str
    check: Check
    """findings.json -> (what we measured, verdict)."""


def _steps(e: dict[str, Any], least: float = 0.0) -> str:
    """A censored_stats dict in words: mean [95% CI] over the seeds that got there, and how many did not. The interval
    is cut at `least`, the smallest value the quantity can take (a step count: 0)."""
    got, censored = e.get("n", 0), e.get("censored", 0)
    if not got:
        return f"none of {censored} seeds"
    if got < 3:
        interval = " (< 3 seeds: no interval)"
    else:
        interval = f" [{max(e['lo'], least):.0f}, {e['hi']:.0f}]" if e.get("lo") is not None else ""
    return f"{e['mean']:.0f}{interval}, {got}/{got + censored} seeds"


def _share(hits: int, total: int) -> str:
    return "reproduced" if total and hits == total else "partly" if hits else "not reproduced"


def power_fig1(f: dict[str, Any]) -> tuple[str, str]:
    train, val = f["steps_to_train_acc_99"], f["steps_to_val_acc_99"]
    ours = f"train 99% at {_steps(train)}; val 99% at {_steps(val)}"
    if not train.get("n"):
        return ours, "not reproduced"
    if not val.get("n"):
        return ours + " (within the budget)", "partly"
    ratio = f["val_over_train_ratio"]["min"]
    return ours + f"; val/train ≥ {ratio:.0f}×", "reproduced" if ratio >= 10 and not val["censored"] else "partly"


def power_fig2(f: dict[str, Any]) -> tuple[str, str]:
    falls, compared = [], 0
    for op, stats in f["per_op"].items():
        done = sorted((float(fr), s["mean"]) for fr, s in stats["by_frac"].items() if s.get("mean") is not None and not s.get("censored"))
        if len(done) >= 2:
            compared += 1
            if done[-1][1] < done[0][1]:
                falls.append(f"{op} {done[0][1]:.0f} at {done[0][0]:g} → {done[-1][1]:.0f} at {done[-1][0]:g}")
    ours = f"falls in {len(falls)} of {compared} ops with ≥ 2 fractions where every seed generalized ({'; '.join(falls) or 'none'})"
    return ours, _share(len(falls), compared)


def _plain_weight_decay(settings: dict[str, Any]) -> bool:
    """Power et al.'s weight decay: decoupled (AdamW), towards the origin."""
    return settings["optim.weight_decay"] > 0 and settings["optim.wd_target"] == "zero" and settings["optim.name"] == "adamw"


HELPS = 0.05
"""Power et al.'s interventions: an arm helps when, at some training fraction, more of its seeds generalize than
without regularization, or its mean final test accuracy is higher by at least this."""


def _helps(f: dict[str, Any], name: str) -> bool:
    arm, base = f["per_arm"][name]["by_frac"], f["per_arm"][f["arms"][0]]["by_frac"]
    return any(
        arm[fr]["steps_to_val_acc_99"]["n"] > base[fr]["steps_to_val_acc_99"]["n"]
        or arm[fr]["final_test_acc"]["mean"] >= base[fr]["final_test_acc"]["mean"] + HELPS
        for fr in base
    )


def _arm(f: dict[str, Any], name: str) -> str:
    """An arm in words: seeds grokked and test accuracy per training fraction, and the fraction it generalizes from."""
    a = f["per_arm"][name]
    several = len(a["by_frac"]) > 1
    at = [
        f"{x['steps_to_val_acc_99']['n']}/{a['seeds']} grokked, test acc {x['final_test_acc']['mean']:.2f}" + (f" at {float(fr):.0%}" if several else "")
        for fr, x in a["by_frac"].items()
    ]
    since = f" (all seeds from {a['min_frac']:.0%})" if a["min_frac"] is not None and several else ""
    return f"{name} {', '.join(at)}{since}"


def power_wd_best(f: dict[str, Any]) -> tuple[str, str]:
    """The recipe's best arm (least data to generalize, then most seeds grokked, then fewest steps, then test accuracy)
    uses weight decay and helps: reproduced; a weight-decay arm helps but another arm is best: partly."""
    arms, base, best = f["per_arm"], f["arms"][0], f["best"]
    wd = [n for n, a in arms.items() if _plain_weight_decay(a["settings"])]
    ours = f"best: {_arm(f, best)}; {_arm(f, base)}"
    if best in wd and _helps(f, best):
        return ours, "reproduced"
    others = [n for n in wd if n != best]
    return ours + "".join(f"; {_arm(f, n)}" for n in others), "partly" if any(_helps(f, n) for n in wd) else "not reproduced"


def power_others_help(f: dict[str, Any]) -> tuple[str, str]:
    chosen = [
        n
        for n, a in f["per_arm"].items()
        if a["settings"]["model.dropout"] > 0 or a["settings"]["optim.grad_noise"] > 0 or a["settings"]["optim.wd_target"] == "init"
    ]
    helps = [n for n in chosen if _helps(f, n)]
    ours = "; ".join(_arm(f, n) for n in [f["arms"][0], *chosen]) + f"; {len(helps)} of {len(chosen)} help"
    return ours, _share(len(helps), len(chosen))


SYMMETRIC = ("x+y", "x*y", "x^2+y^2", "x^2+xy+y^2")
ASYMMETRIC = ("x-y", "x/y", "x^2+xy+y^2+x")


def op_difficulty(f: dict[str, Any]) -> tuple[str, str]:
    frac = lambda op: f["min_frac"].get(op) if f["min_frac"].get(op) is not None else 1.0  # noqa: E731  (never: above every fraction)
    sym = [frac(op) for op in SYMMETRIC if op in f["min_frac"]]
    asym = [frac(op) for op in ASYMMETRIC if op in f["min_frac"]]
    easier = bool(sym and asym) and statistics.mean(sym) < statistics.mean(asym)
    never = "x^3+xy^2+y" in f.get("never_grokked", [])
    ours = (
        f"mean smallest fraction that groks: symmetric {statistics.mean(sym) if sym else float('nan'):.2f} vs "
        f"{statistics.mean(asym) if asym else float('nan'):.2f}; x³+xy²+y {'never generalized' if never else 'generalized'}"
    )
    return ours, _share(easier + never, 2)


def lu_curve(f: dict[str, Any]) -> tuple[str, str]:
    u, underfits = f["lu_test_u_shaped"], f["lu_small_norm_underfits"]
    ours = f"test loss vs norm {'U-shaped' if u else 'not U-shaped'} (best norm {f['lu_best_norm']:.3g}); smallest norm {'underfits' if underfits else 'fits'}"
    return ours, _share(u + underfits, 2)


def modelwise(f: dict[str, Any]) -> tuple[str, str]:
    steps = f["non_monotone_steps"]
    ours = f"interior peak of test loss vs width at {len(steps)} logged steps; at the end {'non-monotone' if f['final_non_monotone'] else 'monotone'}"
    return ours, "reproduced" if f["final_non_monotone"] else "partly" if steps else "not reproduced"


def liu_phases(f: dict[str, Any]) -> tuple[str, str]:
    counts = f["lr-wd"]["counts"]
    seen = [p for p, n in counts.items() if n]
    ours = "lr × wd: " + ", ".join(f"{n} {p}" for p, n in counts.items() if n)
    return ours, "reproduced" if len(seen) == len(counts) else "partly" if "grokking" in seen else "not reproduced"


def _arms(f: dict[str, Any], pattern: str) -> dict[str, Any]:
    return {name: a for name, a in f["arms"].items() if re.search(pattern, name)}


def avoid(f: dict[str, Any]) -> tuple[str, str]:
    chosen = {n: a for n, a in _arms(f, r"batch 50\b|lr 0\.07\b").items() if a["weight_decay"] == 0}
    ours = "; ".join(f"{n}: val 99% at {_steps(a['steps_to_val_acc_99'])}" for n, a in chosen.items()) or "no batch-50 / lr-0.07 arm"
    return ours, _share(sum(not a["steps_to_val_acc_99"]["censored"] for a in chosen.values()), len(chosen))


def slingshot(f: dict[str, Any]) -> tuple[str, str]:
    breaks = [n for a in f["arms"].values() if a["weight_decay"] == 0 for n in a["norm_breaks_per_seed"]]
    ours = f"last-layer norm breaks per seed without weight decay: {breaks}"
    return ours, _share(sum(n > 0 for n in breaks), len(breaks))


RISE = 0.2
"""Structural grokking: the rise of generalization accuracy after in-distribution saturation that counts (the paper's
is ~0.4-0.5: < 40% / < 50% at early stopping to ~90% / ~80%)."""
HUMP = 0.05
"""An inverted U in depth: the best depth's final generalization accuracy above both end depths' by at least this."""


def _by_depth(f: dict[str, Any], key: str) -> dict[str, dict[int, float]]:
    """Per task, the mean over seeds of one structural number by depth (a depth without it counts as 0)."""
    return {
        task: {int(d): n[key]["mean"] or 0.0 for d, n in sorted(depths.items(), key=lambda kv: int(kv[0]))}
        for task, depths in f["per_task"].items()
    }


def _best_depth(values: dict[int, float]) -> int:
    return max(values, key=values.__getitem__)


def structural_rise(f: dict[str, Any]) -> tuple[str, str]:
    final = _by_depth(f, "gen_acc_final")
    parts, rises = [], 0
    for task, depths in final.items():
        d = _best_depth(depths)
        at_99 = f["per_task"][task][str(d)]["gen_acc_at_val_99"]["mean"]  # None: val never reached 99%, nothing to rise from
        rises += at_99 is not None and depths[d] - at_99 >= RISE
        rise = f"gen {at_99:.2f} at val 99% →" if at_99 is not None else "val never 99% (within the budget); gen"
        parts.append(f"{task} ({d} layers): {rise} {depths[d]:.2f} at the end")
    return "; ".join(parts), _share(rises, len(final))


def structural_depth(f: dict[str, Any]) -> tuple[str, str]:
    parts, humps = [], 0
    for task, depths in _by_depth(f, "gen_acc_final").items():
        values = list(depths.values())  # by depth: the ends are the shallowest and the deepest
        humps += len(values) >= 3 and max(values) >= max(values[0], values[-1]) + HUMP  # so the maximum is inside
        parts.append(f"{task}: " + ", ".join(f"{k} layers {v:.2f}" for k, v in depths.items()))
    return "final gen acc by depth: " + "; ".join(parts), _share(humps, len(parts))


def structural_tree(f: dict[str, Any]) -> tuple[str, str]:
    gen, tree = _by_depth(f, "gen_acc_final"), _by_depth(f, "tree_final")
    same = [task for task in gen if _best_depth(gen[task]) == _best_depth(tree[task])]
    parts = [f"{task}: best gen at {_best_depth(gen[task])} layers, most tree-structured at {_best_depth(tree[task])}" for task in gen]
    return "; ".join(parts), _share(len(same), len(gen))


def grokfast(f: dict[str, Any]) -> tuple[str, str]:
    arms = f["steps_to_val_acc_95"]
    base = next(iter(arms.values()))
    filters = {n: a for n, a in arms.items() if re.search(r"\b(ema|ma)\b", n.lower())}
    parts = [f"{n}: {_steps(a)}" for n, a in arms.items()]

    def faster(a: dict[str, Any]) -> bool:
        if a["censored"] or not a["n"]:
            return False
        return bool(base["censored"]) or 10 * a["mean"] <= base["mean"]

    return "steps to 95% val: " + "; ".join(parts), _share(sum(map(faster, filters.values())), len(filters))


def stablemax(f: dict[str, Any]) -> tuple[str, str]:
    chosen = _arms(f, "StableMax")
    ours = "; ".join(f"{n}: val 99% at {_steps(a['steps_to_val_acc_99'])}" for n, a in chosen.items()) or "no StableMax arm"
    return ours, _share(
        sum(not a["steps_to_val_acc_99"]["censored"] and a["steps_to_val_acc_99"]["n"] > 0 for a in chosen.values()), len(chosen)
    )


def parity(f: dict[str, Any]) -> tuple[str, str]:
    rows = list(f["per_n_samples"].values())
    grokked = sum(r["steps_to_val_acc_99"]["n"] for r in rows)
    seeds = sum(r["steps_to_val_acc_99"]["n"] + r["steps_to_val_acc_99"]["censored"] for r in rows)
    # the paper's circuit size: the fewest largest-norm neurons that keep the training accuracy
    pruned = [n for r in rows for n in r.get("final_n_subnetwork", [])]
    small = all(n <= 16 for n in pruned) and bool(pruned)
    sparse = [n for r in rows for n in r.get("final_n_sparse", [])]
    ours = (
        f"val 99% at {'; '.join(_steps(r['steps_to_val_acc_99']) for r in rows)}; pruned subnetwork at the end per seed: "
        f"{pruned or 'not measured'} (neurons with most weight on the k bits: {sparse})"
    )
    verdict = _share(grokked, seeds)
    return ours, "partly" if verdict == "reproduced" and not small else verdict


def nanda_restricted(f: dict[str, Any]) -> tuple[str, str]:
    r = f["restricted_before_val"]
    ours = f"restricted loss below {r['level']:g} before the val loss in {r['seeds_restricted_first']} of {r['seeds']} seeds (lead {_steps(r['lead_steps'], least=-math.inf)} steps)"
    return ours, _share(r["seeds_restricted_first"], r["seeds"])


def nanda_excluded(f: dict[str, Any]) -> tuple[str, str]:
    e = f["excluded_rise"]
    if e["mean"] is None:
        return "no excluded loss logged after memorization", "not reproduced"
    ours = f"peak over start of the excluded loss after memorization: {e['mean']:.3g}" + (
        f" [{e['lo']:.3g}, {e['hi']:.3g}], {e['n']} seeds" if e["lo"] is not None and e["n"] >= 3 else f" ({e['n']} seeds: no interval)"
    )
    above = e["lo"] if e["lo"] is not None else e["mean"]
    return ours, "reproduced" if above > 1 else "partly" if e["mean"] > 1 else "not reproduced"


def nanda_phases(f: dict[str, Any]) -> tuple[str, str]:
    phases = [s["phases"] for s in f["per_seed"]]
    ordered = [p for p in phases if p and p["memorization_end"] < p["circuit_formation_end"] <= p["cleanup_end"]]
    ends = "; ".join(f"{p['memorization_end']} → {p['circuit_formation_end']} → {p['cleanup_end']}" for p in ordered)
    return f"memorization → circuit formation → cleanup ends in {len(ordered)} of {len(phases)} seeds ({ends or 'none'})", _share(
        len(ordered), len(phases)
    )


def nanda_keys(f: dict[str, Any]) -> tuple[str, str]:
    keys = f["final_key_frequencies"]
    return f"key frequencies at the end per seed: {keys}", _share(sum(3 <= k <= 7 for k in keys), len(keys))


LIU_CRITICAL = 0.4
"""Liu et al.'s critical training fraction for addition with p = 10."""


def _near_liu_fraction(c: float) -> str:
    """Verdict for a measured critical fraction: within 0.1 of Liu et al.'s 0.4 reproduces it, within 0.2 partly."""
    return "reproduced" if abs(c - LIU_CRITICAL) <= 0.1 else "partly" if abs(c - LIU_CRITICAL) <= 0.2 else "not reproduced"


def liu_critical(f: dict[str, Any]) -> tuple[str, str]:
    c = f["critical_fraction"]
    if c is None:
        return f"no swept fraction where most seeds reach held-out accuracy {f['fraction']['held_out_threshold']:g}", "not reproduced"
    seeds = next(iter(f["fraction"]["per_fraction"].values()))["seeds"]
    ours = f"critical fraction {c:g} ({seeds} seeds per fraction, held-out accuracy ≥ {f['fraction']['held_out_threshold']:g} in most)"
    return ours, _near_liu_fraction(c)


def liu_unique(f: dict[str, Any]) -> tuple[str, str]:
    u = f["fraction"]["unique_linear"]
    c = u["critical_fraction"]
    runs = (
        f"; of the trained runs whose training split fixes it, {u['runs_fixed_at_ideal']} of {u['runs_fixed']} reached their split's "
        f"ideal held-out accuracy and {u['runs_fixed_generalized']} held-out accuracy {f['fraction']['held_out_threshold']:g}; "
        f"{u['runs_free_generalized']} of the {u['runs'] - u['runs_fixed']} others did"
    )
    if c is None:
        return f"no training-set size fixes the linear representation in most of {u['draws']} draws" + runs, "not reproduced"
    ours = f"most of {u['draws']} random training sets per size fix the linear representation from fraction {c:.2g}" + runs
    return ours, _near_liu_fraction(c)


CLAIMS: tuple[Claim, ...] = (
    Claim(
        "Power et al. 2022, Fig 1",
        "x÷y mod 97, 50%, no weight decay: train 99% by ~10³ steps, val only by ~10⁵–10⁶",
        "power-fig1",
        power_fig1,
    ),
    Claim("Power et al. 2022, Fig 2", "steps to 99% val fall steeply as the training fraction grows", "power-fig2", power_fig2),
    Claim(
        "Power et al. 2022, interventions",
        "S5 product, 10⁵ steps: weight decay improves generalization the most (it needs the least data to generalize)",
        "power-interventions",
        power_wd_best,
    ),
    Claim(
        "Power et al. 2022, interventions",
        "noise (dropout, gradient noise) and weight decay towards the initialization also help, vs no regularization",
        "power-interventions",
        power_others_help,
    ),
    Claim(
        "Power et al. 2022, per operation",
        "symmetric ops need less data than x−y, x÷y, x²+xy+y²+x; x³+xy²+y never generalizes",
        "op-difficulty",
        op_difficulty,
    ),
    Claim("Nanda et al. 2023, progress measures", "restricted loss falls before the test loss", "nanda-progress", nanda_restricted),
    Claim("Nanda et al. 2023, progress measures", "the excluded loss rises after memorization", "nanda-progress", nanda_excluded),
    Claim("Nanda et al. 2023, phases", "three phases: memorization, circuit formation, cleanup", "nanda-progress", nanda_phases),
    Claim("Nanda et al. 2023, key frequencies", "5 key frequencies (p = 113; six non-zero in the embedding)", "nanda-progress", nanda_keys),
    Claim(
        "Liu et al. 2022, toy model, Fig 4a",
        "critical training fraction ≈ 0.4 for addition with p = 10: above it the training set leaves the linear representation as the only one",
        "liu-toy",
        liu_unique,
    ),
    Claim(
        "Liu et al. 2022, toy model", "trained toy models generalize above the critical fraction ≈ 0.4 (p = 10)", "liu-toy", liu_critical
    ),
    Claim(
        "Liu et al. 2022, phase diagrams",
        "comprehension, grokking, memorization and confusion all appear over lr × wd",
        "liu-phases",
        liu_phases,
    ),
    Claim(
        "Liu et al. 2023 (Omnigrok), LU curves",
        "LU: train loss high at small weight norm, test loss U-shaped in the norm",
        "omnigrok-digits",
        lu_curve,
    ),
    Claim("Liu et al. 2023 (Omnigrok), modular", "the same LU shape on modular addition", "omnigrok-modular", lu_curve),
    Claim(
        "Merrill et al. 2023",
        "parity n = 40, k = 3, 1,000 samples: generalizes after memorizing; sparse subnetwork of 6–8 neurons",
        "parity",
        parity,
    ),
    Claim("Davies et al. 2023", "test loss non-monotone in model width", "modelwise", modelwise),
    Claim(
        "Pope's review (Thilak et al.)",
        "without weight decay, batch 50 or lr 7·10⁻² generalize within 3·10⁴ steps",
        "avoid-grokking",
        avoid,
    ),
    Claim("Thilak et al. 2022", "Adam without weight decay: slingshot spikes in the last-layer norm", "slingshot", slingshot),
    Claim("Lee et al. 2024 (Grokfast)", "x·y mod 97, 50%: 39,890 → 790 (MA) / 910 (EMA) steps to 95% val", "grokfast", grokfast),
    Claim("Prieto et al. 2025", "StableMax generalizes without weight decay", "stablemax", stablemax),
    Claim(
        "Murty et al. 2023, structural grokking",
        "generalization keeps rising long after in-distribution saturation: ~90% / ~80% at the end vs < 40% / < 50% at early stopping (question formation / tense)",
        "structural",
        structural_rise,
    ),
    Claim(
        "Murty et al. 2023, depth",
        "an inverted U in depth (best 6 layers for question formation, 4 for tense)",
        "structural",
        structural_depth,
    ),
    Claim("Murty et al. 2023, tree-structuredness", "the best depth is the most tree-structured", "structural", structural_tree),
)


def claims_of(recipe: str) -> list[Claim]:
    return [c for c in CLAIMS if c.recipe == recipe]


def evaluate(recipe: str, findings: dict[str, Any]) -> list[dict[str, str]]:
    """The claims of `recipe` judged on one findings dict: [{source, paper, ours, verdict}] (a check that cannot read
    these findings says so instead of raising)."""
    out = []
    for claim in claims_of(recipe):
        try:
            ours, verdict = claim.check(findings)
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as err:
            ours, verdict = f"findings lack what this check reads ({type(err).__name__}: {err})", "not yet run"
        out.append({"source": claim.source, "paper": claim.paper, "ours": ours, "verdict": verdict})
    return out
