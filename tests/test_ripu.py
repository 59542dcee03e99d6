"""RIPU: region scores, exact fast selection, budgets, losses, and the method's training step."""
import math

import numpy as np
import pytest
import torch

from kit import active, annotation, losses
from kit.active import greedy_select, greedy_select_reference
from kit.annotation import Budget


# ---------------------------------------------------------------------------------------------
# region scores against a direct per-window computation
# ---------------------------------------------------------------------------------------------
def _direct_scores(prob, k):
    b, c, h, w = prob.shape
    pred = prob.argmax(1)
    ent = -(prob * torch.log(prob.clamp_min(1e-12))).sum(1) / math.log(c)
    ri = torch.zeros(b, h, w, dtype=torch.float64)
    pu = torch.zeros(b, h, w, dtype=torch.float64)
    for n in range(b):
        for i in range(h):
            for j in range(w):
                ys, xs = slice(max(0, i - k), i + k + 1), slice(max(0, j - k), j + k + 1)
                win = pred[n, ys, xs].reshape(-1)
                hist = torch.bincount(win, minlength=c).double() / win.numel()
                nz = hist[hist > 0]
                ri[n, i, j] = -(nz * nz.log()).sum()
                pu[n, i, j] = ent[n, ys, xs].double().mean()
    return ri, pu


@pytest.mark.parametrize("k", [0, 1, 2])
def test_scores_match_direct_window_computation(k):
    g = torch.Generator().manual_seed(k)
    prob = (torch.randn(2, 4, 7, 9, generator=g) * 2).softmax(1)
    s = active.region_scores(prob, k, normalize=False)
    ri, pu = _direct_scores(prob, k)
    assert torch.allclose(s["impurity"].double(), ri, atol=1e-5)
    # the default (official) divides the impurity by log C; the ranking is the same
    assert torch.allclose(active.region_impurity(prob, k).double(), ri / math.log(4), atol=1e-5)
    assert torch.allclose(s["uncertainty"].double(), pu, atol=1e-5)
    assert torch.allclose(s["score"].double(), ri * pu, atol=1e-5)


def test_pure_regions_have_zero_impurity_and_bad_input_fails():
    prob = torch.zeros(1, 3, 5, 5)
    prob[:, 1] = 1.0
    assert float(active.region_impurity(prob, 1).abs().max()) == 0.0
    with pytest.raises(ValueError, match=r"\[B,C,H,W\]"):
        active.region_scores(torch.rand(3, 5, 5))
    with pytest.raises(ValueError, match="k must be"):
        active.region_scores(prob, -1)
    with pytest.raises(ValueError, match="acquisition"):
        active.acquisition_map(prob, "entropy")


# ---------------------------------------------------------------------------------------------
# exact identity of the fast selection with the plain greedy loop (ties included)
# ---------------------------------------------------------------------------------------------
def test_fast_selection_identical_to_greedy_reference_on_random_maps():
    g = torch.Generator().manual_seed(0)
    for t in range(240):
        h, w = int(torch.randint(1, 40, (1,), generator=g)), int(torch.randint(1, 70, (1,), generator=g))
        kind = t % 4
        if kind == 0:    # many ties
            s = torch.randint(0, 4, (h, w), generator=g).float()
        elif kind == 1:  # continuous
            s = torch.rand(h, w, generator=g)
        elif kind == 2:  # ties and already-labelled (-inf) pixels
            s = torch.randint(0, 3, (h, w), generator=g).float()
            s[torch.rand(h, w, generator=g) < 0.3] = -math.inf
        else:            # mostly exact zeros, like pure regions of a real score map
            s = torch.rand(h, w, generator=g) * (torch.rand(h, w, generator=g) < 0.1)
        n = int(torch.randint(0, h * w // 3 + 2, (1,), generator=g))
        r = int(torch.randint(0, 5, (1,), generator=g))
        for order in active.TIE_ORDERS:
            assert greedy_select(s, n, r, tie_order=order) == greedy_select_reference(s, n, r, tie_order=order), \
                (t, h, w, n, r, order)


def test_fast_selection_identical_on_a_larger_map_with_small_start_block():
    g = torch.Generator().manual_seed(1)
    s = (torch.rand(96, 160, generator=g) * 8).floor()   # heavy ties, forces several blocks
    ref = greedy_select_reference(s, 500, 2)
    assert greedy_select(s, 500, 2, start_factor=1) == ref
    assert len(ref) <= 500
    assert greedy_select(s, 500, 2, start_factor=1, tie_order="row") == greedy_select_reference(s, 500, 2, "row")


def test_greedy_ties_take_lowest_column_first_and_nan_fails():
    # official tie rule: lowest column, then lowest row (was: row-major, kept as tie_order="row")
    s = torch.zeros(4, 4)
    assert greedy_select_reference(s, 1, 1) == [(0, 0)] == greedy_select(s, 1, 1)
    s[0, 3] = s[2, 1] = s[3, 1] = 1.0
    assert greedy_select_reference(s, 1, 0) == [(2, 1)] == greedy_select(s, 1, 0)
    assert greedy_select_reference(s, 1, 0, "row") == [(0, 3)] == greedy_select(s, 1, 0, tie_order="row")
    with pytest.raises(ValueError, match="tie_order"):
        greedy_select(s, 1, 0, tie_order="diagonal")
    s[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        greedy_select(s, 1, 1)


# ---------------------------------------------------------------------------------------------
# budget arithmetic and annotation state
# ---------------------------------------------------------------------------------------------
def test_budget_arithmetic():
    b = Budget("region", 0.022, 5, 1)
    assert b.area == 9
    # 1024x2048 at 2.2% over 5 rounds: 9227 px per round -> 1025 regions of 9 px
    assert b.picks_per_round(1024, 2048) == 1025
    assert 5 * 1025 * 9 <= b.pixels_per_image(1024, 2048)
    assert Budget("pixel", rounds=5, points=40).picks_per_round(640, 1280) == 8
    with pytest.raises(ValueError, match="mode"):
        Budget("polygon")
    with pytest.raises(ValueError, match="fraction"):
        Budget("region", 2.2)


@pytest.mark.parametrize("mode,k", [("region", 1), ("region", 2), ("pixel", 0), ("point", 0)])
def test_rounds_never_exceed_budget_and_never_reselect(mode, k):
    g = torch.Generator().manual_seed(3)
    n, c, h, w = 3, 5, 24, 40
    state = annotation.AnnotationState.empty(n, h, w)
    budget = Budget(mode, 0.05, 4, k, points=12)
    picked = [set() for _ in range(n)]
    for r in range(budget.rounds):
        prob = (torch.randn(n, c, h, w, generator=g) * 2).softmax(1)
        before = state.mask.clone()
        picks = annotation.select_round(prob, state, list(range(n)), budget, "ripu", suppress=2 if mode == "pixel" else None)
        for i, p in enumerate(picks):
            room = budget.allowed_pixels(h, w, r) - int(before[i].sum())
            assert len(p) * budget.area <= room
            for y, x in p:
                assert not before[i, y, x], "an already-labelled pixel was picked again"
                assert (y, x) not in picked[i]
                picked[i].add((y, x))
        assert int(state.mask.flatten(1).sum(1).max()) <= budget.allowed_pixels(h, w, r)
    assert int(state.mask.flatten(1).sum(1).max()) <= budget.pixels_per_image(h, w)
    assert state.labeled_fraction == pytest.approx(state.labeled_pixels / (n * h * w))


def test_budget_smaller_than_a_region_per_round_carries_over():
    # 64x128 at 0.5%: 40 px in total, 8 px per round < one 3x3 region -> 4 regions over 5 rounds
    b = Budget("region", 0.005, 5, 1)
    assert b.picks_per_round(64, 128) == 0
    assert [b.allowed_pixels(64, 128, r) for r in range(5)] == [8, 16, 24, 32, 40]
    state = annotation.AnnotationState.empty(1, 64, 128)
    g = torch.Generator().manual_seed(5)
    for r in range(5):
        annotation.select_round((torch.randn(1, 4, 64, 128, generator=g) * 3).softmax(1), state, [0], b)
    assert 27 <= state.labeled_pixels <= 40


def test_region_picks_in_a_round_do_not_overlap():
    g = torch.Generator().manual_seed(4)
    s = torch.rand(30, 50, generator=g)
    picks = greedy_select(s, 40, 2)
    for a in range(len(picks)):
        for b in range(a):
            assert max(abs(picks[a][0] - picks[b][0]), abs(picks[a][1] - picks[b][1])) > 2
    m = active.region_mask(picks, (30, 50), 1)
    assert int(m.sum()) <= 9 * len(picks)


def test_image_level_selection_spends_same_pixel_budget():
    state = annotation.AnnotationState.empty(20, 8, 8)
    b = Budget("image", 0.2, 2)
    annotation.image_level_select(torch.arange(20.0), state, b)   # 0.1 * 20 images -> 2 images, highest score
    assert state.mask.flatten(1).all(1).nonzero().flatten().tolist() == [18, 19]
    annotation.image_level_select(torch.arange(20.0), state, b)
    assert state.labeled_pixels == 4 * 64
    assert state.masked_labels(torch.zeros(8, 8, dtype=torch.long), 0).eq(255).all()


# ---------------------------------------------------------------------------------------------
# losses against hand-computed values
# ---------------------------------------------------------------------------------------------
def test_negative_learning_loss_hand_computed():
    p = torch.tensor([[0.9, 0.07, 0.03], [0.5, 0.49, 0.01]])      # two pixels, three classes
    logits = torch.log(p).t().reshape(1, 3, 1, 2)
    expect = -(math.log(1 - 0.03) + math.log(1 - 0.01)) / 2       # entries below tau = 0.05
    assert float(losses.negative_learning_loss(logits, 0.05)) == pytest.approx(expect, rel=1e-5)
    expect_08 = -(math.log(1 - 0.07) + math.log(1 - 0.03) + math.log(1 - 0.01)) / 3
    assert float(losses.negative_learning_loss(logits, 0.08)) == pytest.approx(expect_08, rel=1e-5)
    uniform = torch.zeros(1, 3, 2, 2)
    assert float(losses.negative_learning_loss(uniform)) == 0.0
    with pytest.raises(ValueError, match="tau"):
        losses.negative_learning_loss(uniform, 1.5)


def test_local_consistency_loss_hand_computed():
    # the non-official "in_image" form (the kit's default before it followed the official code)
    # 1x3 image, two classes; probabilities (1,0), (0,1), (0,1); labels 0, 1, 1
    logits = torch.tensor([[30.0, -30.0, -30.0], [-30.0, 30.0, 30.0]]).reshape(1, 2, 1, 3)
    labels = torch.tensor([[[0, 1, 1]]])
    # neighbourhood means: pixel0 -> mean of px0,px1 = (.5,.5); pixel1 -> (1/3, 2/3); pixel2 -> (0, 1)
    # masks: pixel0 {0,1} non-uniform, pixel1 {0,1,1} non-uniform, pixel2 {1,1} uniform -> excluded
    d0 = 0.5 + 0.5
    d1 = 1 / 3 + 1 / 3
    lcr = losses.local_consistency_loss(logits, labels, variant="in_image")
    assert float(lcr) == pytest.approx((d0 + d1) / 2, abs=1e-5)
    assert losses.ripu_boundary_mask(labels, variant="in_image").tolist() == [[[True, True, False]]]
    # an ignore label in the neighbourhood excludes the pixel; uniform labels give 0
    assert losses.ripu_boundary_mask(torch.tensor([[[0, 1, 255]]]), variant="in_image").tolist() == \
        [[[True, False, False]]]
    assert float(losses.local_consistency_loss(logits, torch.ones(1, 1, 3, dtype=torch.long), variant="in_image")) == 0.0
    # the official form: replicate-padded means px0 (2/3 (1,0) + 1/3 (0,1)), px1 (1/3, 2/3), px2 (0, 1);
    # Laplacian mask with zero padding: px0 8*0-1 != 0, px1 8-1 != 0, px2 8-1 != 0 (image border)
    assert losses.ripu_boundary_mask(labels).tolist() == [[[True, True, True]]]
    o0, o1, o2 = 2 / 3, 2 / 3, 0.0
    assert float(losses.local_consistency_loss(logits, labels)) == pytest.approx((o0 + o1 + o2) / 3, abs=1e-5)
    # uniform labels: only the border counts, unless the id is 0; an ignore neighbour makes a boundary
    assert losses.ripu_boundary_mask(torch.zeros(1, 3, 3, dtype=torch.long)).sum() == 0
    assert losses.ripu_boundary_mask(torch.ones(1, 3, 3, dtype=torch.long)).sum() == 8
    assert losses.ripu_boundary_mask(torch.tensor([[[0, 0, 255]]])).tolist() == [[[False, True, False]]]
    with pytest.raises(ValueError, match="variant"):
        losses.local_consistency_loss(logits, labels, variant="paper")


# ---------------------------------------------------------------------------------------------
# the method: smoke training, source-free variant, paper profile constructs and steps on CPU
# ---------------------------------------------------------------------------------------------
def _tiny(profile="smoke", **kw):
    from kit.config import resolve

    return resolve(profile, "ripu", **kw)


def test_ripu_trains_selects_and_respects_budget(tmp_path):
    from kit.methods import ripu, ripu_pool

    cfg = _tiny(cache_dir=str(tmp_path), init="pretrained", iters=3, select_at=[0, 2], budget=0.05)
    model, pool, hist = ripu.train_ripu(cfg, 0)
    assert len(pool.state.history) == 2
    per_image = pool.state.mask.flatten(1).sum(1)
    assert int(per_image.max()) <= ripu_pool.make_budget(cfg).pixels_per_image(pool.h, pool.w)
    assert set(pool.round_map.unique().tolist()) <= {-1, 0, 1}
    assert {"src", "tgt", "cr", "nl"} <= set(hist.train[-1])
    assert hist.val and "miou" in hist.val[-1]


@pytest.mark.parametrize("mode", ["pixel", "image", "point"])
def test_ripu_modes_and_source_free(tmp_path, mode):
    from kit.methods import ripu

    cfg = _tiny(cache_dir=str(tmp_path), init="pretrained", iters=2, select_at=[0, 1], mode=mode, budget=0.25,
                source_free=(mode == "pixel"), acquisition="random" if mode == "point" else "ripu")
    model, pool, hist = ripu.train_ripu(cfg, 0)
    assert pool.state.labeled_pixels > 0
    if mode == "pixel":
        assert "src" not in hist.train[-1]
        assert int(pool.state.mask.flatten(1).sum(1).max()) <= cfg["pa_points"]


def test_bad_config_fails_clearly(tmp_path):
    from kit.methods import ripu, ripu_pool

    with pytest.raises(ValueError, match="acquisition"):
        ripu.train_ripu(_tiny(acquisition="entropy", cache_dir=str(tmp_path)))
    with pytest.raises(ValueError, match="select_at"):
        ripu_pool.selection_iters(_tiny(select_at=[0, 1, 2]))
    with pytest.raises(ValueError, match="never run"):
        ripu.train_ripu(_tiny(select_at=[0, 9], cache_dir=str(tmp_path)))


def test_paper_profile_constructs_and_steps_on_cpu(tmp_path):
    """The paper profile (DeepLab-v2 ResNet-101, frozen BN, SGD 2.5e-4 with 10x heads, 2+2 batches,
    selection rounds at 10k..18k of a 62.5k poly schedule stopped at 40k) with sizes and counts
    overridden down: 32x64 toy images, width 8, 3 iterations, rounds at iterations 0 and 2, and a
    tiny LR (a random-init ResNet-101 without BN updates diverges at the paper's LR; the paper
    starts from ImageNet weights, which CI does not have)."""
    from kit.methods import ripu

    cfg = _tiny("paper", cache_dir=str(tmp_path), size=[32, 64], source_size=[32, 64], eval_size=[32, 64],
                n_train=4, n_val=2, width=8, iters=6, max_iters=3, select_at=[0, 2], rounds=2, pool_size=4,
                eval_every=0, num_workers=0, progress=False, log_every=1, eval_batch_size=2, device="cpu", lr=1e-7)
    assert cfg["depth"] == 101 and cfg["frozen_bn"] and cfg["optimizer"] == "sgd" and cfg["head_lr_mult"] == 10
    paper = _tiny("paper")
    assert paper["select_at"] == [10000, 12000, 14000, 16000, 18000] and paper["max_iters"] == 40000
    assert paper["iters"] == 62500 and paper["batch_size"] == 2 and paper["budget"] == 0.022
    model, pool, hist = ripu.train_ripu(cfg, 0)
    assert len(hist.train) == 3 and pool.state.labeled_pixels > 0


def test_pool_names_have_one_home():
    """The pool's names live only in kit.methods.ripu_pool: kit.methods.ripu does not export them
    (it imports the ones it uses), and the rest are no attribute of it at all."""
    from kit.methods import ripu, ripu_pool

    for name in ripu_pool.__all__:
        assert callable(getattr(ripu_pool, name)), name
        assert name not in ripu.__all__, name
    assert not hasattr(ripu, "suppression_radius")
    assert not hasattr(ripu, "load_or_train_ripu")       # fit("ripu", cfg, seed, data) now


def test_label_geometry_tells_clustered_from_spread_labels():
    """C2's diagnosis: the same number of labelled pixels as one 3x3 block on a boundary or as
    nine points spread over the image."""
    from kit.annotation import label_geometry

    y = torch.zeros(1, 12, 12, dtype=torch.long)
    y[:, :, 6:] = 1
    region = torch.full((1, 12, 12), -1, dtype=torch.int8)
    region[0, 0:3, 5:8] = 0
    points = torch.full((1, 12, 12), -1, dtype=torch.int8)
    points[0, 1::4, 1::4] = 2
    wrong = torch.zeros(1, 12, 12, dtype=torch.bool)
    wrong[0, :, :6] = True
    g_r, g_p = label_geometry(region, y, wrong, block=4), label_geometry(points, y, wrong, block=4)
    assert g_r["labelled"] == g_p["labelled"] == pytest.approx(100 * 9 / 144)
    assert g_r["at_boundary"] == pytest.approx(100 * 6 / 9) and g_p["at_boundary"] == pytest.approx(100 * 3 / 9)
    assert g_r["blocks_touched"] == pytest.approx(100 / 9) and g_p["blocks_touched"] == 100.0
    assert g_r["labelled_wrong"] == pytest.approx(100 * 3 / 9) and g_r["wrong"] == 50.0
    with pytest.raises(ValueError, match="differ in shape"):
        label_geometry(region, y[:, :6])
