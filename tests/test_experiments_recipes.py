"""``recipes/street`` and ``recipes/alley``: every method's default recipe on each of the kit's
domain pairs against the model it starts from (the second pair is where the recipes, chosen on
the street world, are checked)."""
from __future__ import annotations

import torch

from kit import experiments
from kit.data import ToyWorld
from kit.data.world_spec import DA_PAIRS, DOMAINS
from kit.results import load_metrics

ADAPTED = ["AdaptSegNet", "DAS3 stage 1", "DAS3 stage 2", "DAS3 stage 3", "RIPU"]


def test_the_alley_pair_differs_where_it_matters():
    """One background class covers most pixels, the label space is smaller and merged, and the
    objects are smaller than on the street world."""
    assert DA_PAIRS == {"street": ("synthetic", "real"), "alley": ("alley_sim", "alley_real")}
    shares = {}
    for name in ("real", "alley_real"):
        spec, w = DOMAINS[name], ToyWorld(name, "train", (64, 128), 64)
        counts = torch.zeros(spec.num_classes)
        for i in range(len(w)):
            y = w[i][1]
            counts += torch.bincount(y[y != 255].flatten(), minlength=spec.num_classes)
        shares[name] = dict(zip(spec.classes, (counts / counts.sum()).tolist()))
    assert DOMAINS["alley_sim"].classes == DOMAINS["alley_real"].classes and len(DOMAINS["alley_real"].classes) == 8
    assert max(shares["alley_real"].values()) > 0.6 > max(shares["real"].values())
    assert shares["alley_real"]["person"] < shares["real"]["person"]


def test_both_pairs_are_registered_with_the_same_rows():
    for pair, (src, tgt) in DA_PAIRS.items():
        e = experiments.get(f"recipes/{pair}")
        cfg = e.config("smoke")
        assert (cfg.source, cfg.target) == (src, tgt)
        assert [c.name for c in e.cells] == ["source-only", "target oracle", *ADAPTED]
        assert not e.decides and not e.in_notebook(cfg) and [c.id for c in e.claims] == ["R1"]


def test_a_smoke_run_compares_each_default_with_its_start(tmp_path):
    path = experiments.reproduce("recipes/alley", "smoke", {"cache_dir": str(tmp_path / "cache")},
                                 runs_dir=tmp_path / "runs", log=None)
    m = load_metrics(path)
    (claim,) = m["claims"]
    assert sorted(claim["effects"]) == sorted([f"{n} − its start" for n in ADAPTED] + ["DAS3 (three stages) − source-only"])
    rows = {r["cell"]: r for r in m["results"]["table"]}
    assert set(rows) == {"source-only", "target oracle", *ADAPTED}
    # AdaptSegNet, RIPU and DAS3's stage 1 start from the source-only model; stage s from stage s-1
    for n in ("AdaptSegNet", "RIPU", "DAS3 stage 1"):
        assert rows[n]["start"] == rows["source-only"]["miou"], n
    assert rows["DAS3 stage 2"]["start"] == rows["DAS3 stage 1"]["miou"]
    assert rows["DAS3 stage 3"]["start"] == rows["DAS3 stage 2"]["miou"]
    assert claim["verdict"] in ("holds", "does not hold", "undecided")
