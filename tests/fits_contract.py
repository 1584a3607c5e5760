"""A fits.json with the headline keys of the report contract (``floor``, ``headline``,
``best_law``), built from a report of ``analysis.report.fit_study`` that may lack them: the
figures and the notebook are tested against the contract, whichever code wrote the report."""
from __future__ import annotations

import copy

SHORT = {"test_loss_last": "L_last", "test_loss_avg": "L_avg", "test_err_last": "Err_last",
         "test_err_avg": "Err_avg"}


def with_contract(rep: dict, source: str = "chinchilla") -> dict:
    """``rep`` plus the contract's keys: its floors as the study-wide E (labelled ``source``),
    one headline row per (metric, slice) pointing at its power-law fit entries."""
    rep = copy.deepcopy(rep)
    if "headline" in rep and "floor" in rep:  # the report code writes them already
        return rep
    fits = rep["fits"]
    rep["floor"] = {m: {"E": E, "ci": [0.9 * E, min(1.05 * E, E + 0.01)], "source": source,
                        "detail": f"{source} floor of the test", "resolved": True}
                    for m, E in rep["floors"].items()}
    slots: dict = {}
    for i, f in enumerate(fits):
        if f["form"] != "power":
            continue
        base, _, sub = f["metric"].partition(" - ")
        if base not in SHORT:
            continue
        kind = "C" if f["x"].endswith("(frontier)") else "N"
        sl = f"frontier ({f['group']})" if kind == "C" else f["group"]
        slots.setdefault((base, kind, sl), {})["reducible" if sub else "raw"] = i
    rep["headline"] = []
    for (m, kind, sl), ix in slots.items():
        q = "reducible" if "reducible" in ix else "raw"
        f = fits[ix[q]]
        rep["headline"].append({
            "metric": m, "short": SHORT[m], "slice": sl, "kind": kind, "quantity": q,
            "fit": ix[q], "fit_raw": ix["raw"], "alpha": f["params"]["alpha"],
            "alpha_ci": f["ci"].get("alpha"), "r": f["r"], "r_ci": [f["r"] - 0.002, f["r"] + 0.001],
            "r_raw": fits[ix["raw"]]["r"],
            "lolo": {"err": -0.012, "held_out": "largest", "observed": 3.1, "predicted": 3.06}})
    rep["best_law"] = {m: {"law": "power (reducible)", "err": -0.004, "within_3pct": True,
                           "laws": {"power (reducible)": {"err": -0.004}}} for m in rep["floor"]}
    return rep
