"""No model retrains because the code moved: the cache names the runner computes (``kit.fit.key_of``)
for a fixed set of requests at the smoke, quick and full profiles -- every method, its parents
(DAS3's chain, RIPU and AdaptSegNet from the source-only model, CDCL's fine-tuning, DDeP's
encoder -> pretraining -> fine-tuning) and their spec -- equal the names recorded in
``tests/data/model_keys.json``, computed by the per-method key functions of the code before the
one runner (commit 19436af). A change that must change a key updates the file in a commit
that says why those models train again (and bumps ``kit.cache.KEY_VERSION`` if it changes what
a key means). So far two did, both in DAS3's stage 1, whose change moves every stage's key (the 30
DAS3 rows): its default focal form became the authors' (``focal_grad`` "through"), and its
diversity term's normalization became a named field (``diversity_norm``)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from kit.config import resolve
from kit.data import make_cdcl_datasets, make_da_datasets
from kit.fit import key_of

ROWS = json.loads((Path(__file__).parent / "data" / "model_keys.json").read_text())
_DATA: dict = {}


def _data(cfg, profile: str, cdcl: bool):
    k = (profile, cdcl)
    if k not in _DATA:
        _DATA[k] = (make_cdcl_datasets({**cfg, "datasets": ["city_a", "city_b", "city_c"]}) if cdcl
                    else make_da_datasets(cfg))
    return _DATA[k]


@pytest.mark.parametrize("profile", ["smoke", "quick", "full"])
def test_the_runner_gives_every_recorded_key(profile):
    rows = [r for r in ROWS if r["profile"] == profile]
    assert len(rows) == 64
    got = []
    for r in rows:
        cfg = resolve(profile, r["config"], **r["changes"])
        got.append(key_of(r["method"], cfg, r["seed"], _data(cfg, profile, r["method"] == "cdcl"), **r["spec"]))
    wrong = [(r["method"], r["changes"], r["spec"], r["seed"], r["key"], g) for r, g in zip(rows, got) if g != r["key"]]
    assert not wrong, f"{len(wrong)} of {len(rows)} keys changed, e.g. {wrong[:3]}"
