"""RIPU against the official code's semantics (BIT-DA/RIPU), stated here as small, slow reference
code written from the description in papers.md -- not from the kit:

* RA scores (floating_region.py): softmax entropy with +1e-6 inside the log, / log C, summed over a
  zero-padded (2k+1)^2 window and divided by the in-image count; impurity = entropy of the
  window's predicted-class histogram, / log C; score = product.
* PA scores (build.py PixelSelection): pixel entropy (nats) x impurity (nats) of a (2K+1)^2 window.
* Selection (build.py): logits upsampled (bilinear, align_corners=True) to the original label size;
  score[active] = -inf; repeat: torch.max over rows, then over columns; label the (2k+1)^2 region,
  set the suppression window to -inf and mark it in the persistent "active" indicator.
  RA: ceil(H*W*ratio/rounds/(2k+1)^2) regions per round; PA: ceil(PIXELS/rounds/(1280*640)*(2048*1024)).
* L_cr (loss/boundary.py): Laplacian boundary with zero padding, & label != 255; replicate-padded mean.
* L_nl: on logits upsampled to the training size, -log(1 - p) averaged over entries with p < tau.
* Labels written by a selection round reach DataLoader workers started before it, and a killed run
  resumes with them.
"""
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from kit import active, annotation, losses
from kit.config import resolve
from kit.methods import ripu

EPS = 1e-6


# ---------------------------------------------------------------------------------------------
# reference code (loops; [H,W] maps of one image)
# ---------------------------------------------------------------------------------------------
def ref_entropy(p):                       # p [C,H,W] -> [H,W], nats
    return -(p * torch.log(p + EPS)).sum(0)


def ref_windows(h, w, k):
    for i in range(h):
        for j in range(w):
            yield i, j, slice(max(0, i - k), i + k + 1), slice(max(0, j - k), j + k + 1)


def ref_impurity(p, k):                   # nats
    c, h, w = p.shape
    pred = p.argmax(0)
    out = torch.zeros(h, w, dtype=torch.float64)
    for i, j, ys, xs in ref_windows(h, w, k):
        hist = torch.bincount(pred[ys, xs].reshape(-1), minlength=c).double()
        hist = hist / hist.sum()
        nz = hist[hist > 0]
        out[i, j] = -(nz * nz.log()).sum()
    return out


def ref_ra_score(p, k):
    c, h, w = p.shape
    ent = ref_entropy(p).double() / math.log(c)
    pu = torch.zeros(h, w, dtype=torch.float64)
    for i, j, ys, xs in ref_windows(h, w, k):
        pu[i, j] = ent[ys, xs].mean()
    return ref_impurity(p, k) / math.log(c) * pu


def ref_pa_score(p, k):
    return ref_entropy(p).double() * ref_impurity(p, k)


def ref_argmax(s):
    """torch.max over rows, then over the row of column maxima (first index on ties, checked below)."""
    h, w = s.shape
    best, by, bx = -math.inf, None, None
    for x in range(w):                    # lowest column first ...
        for y in range(h):                # ... then lowest row; strict > keeps the first maximum
            if s[y, x] > best:
                best, by, bx = float(s[y, x]), y, x
    return best, by, bx


def ref_select(score, active_ind, n, label_r, mask_r):
    """One image, one round: returns (picks, labelled, active) with the official loop."""
    s = score.clone().double()
    act = active_ind.clone()
    s[act] = -math.inf
    lab = torch.zeros_like(act)
    picks = []
    for _ in range(n):
        best, y, x = ref_argmax(s)
        if best == -math.inf:
            break
        picks.append((y, x))
        s[max(0, y - mask_r):y + mask_r + 1, max(0, x - mask_r):x + mask_r + 1] = -math.inf
        act[max(0, y - mask_r):y + mask_r + 1, max(0, x - mask_r):x + mask_r + 1] = True
        lab[max(0, y - label_r):y + label_r + 1, max(0, x - label_r):x + label_r + 1] = True
    return picks, lab, act


def _probs(seed, c=5, h=12, w=17, scale=3.0, quant=None):
    g = torch.Generator().manual_seed(seed)
    lg = torch.randn(1, c, h, w, generator=g) * scale
    if quant:                             # quantized logits: many exact ties in the score map
        lg = (lg * quant).round() / quant
    return lg.softmax(1)


# ---------------------------------------------------------------------------------------------
# scores
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 2])
def test_ra_scores_match_official(k):
    p = _probs(k)
    kit = active.region_scores(p, k)["score"][0].double()
    assert torch.allclose(kit, ref_ra_score(p[0], k), atol=1e-5)
    # the paper's nats form differs by the factor log C only
    nats = active.region_scores(p, k, normalize=False)["score"][0].double()
    assert torch.allclose(nats, kit * math.log(5), atol=1e-5)


def test_pa_scores_match_official():
    p = _probs(7, h=14, w=20)
    kit = active.pixel_scores(p, 3)["score"][0].double()
    assert torch.allclose(kit, ref_pa_score(p[0], 3), atol=1e-5)
    assert torch.allclose(active.acquisition_map(p, "ripu", 3, pixel=True)[0].double(), kit)
    # not window-averaged: the uncertainty of the PA score is the pixel's own entropy
    assert torch.allclose(active.pixel_scores(p, 3)["uncertainty"][0], ref_entropy(p[0]), atol=1e-6)


# ---------------------------------------------------------------------------------------------
# ties and greedy order
# ---------------------------------------------------------------------------------------------
def test_torch_max_returns_first_index_on_ties():
    # the official order rests on this: torch.max(dim) gives the first maximal index
    s = torch.tensor([[0.0, 2.0, 2.0], [2.0, 2.0, 0.0], [2.0, 0.0, 2.0]])
    v, rows = torch.max(s, dim=0)
    assert rows.tolist() == [1, 0, 0] and int(torch.max(v, dim=0).indices) == 0


def test_greedy_order_matches_official_loop_with_ties():
    g = torch.Generator().manual_seed(0)
    for t in range(40):
        h, w = int(torch.randint(2, 14, (1,), generator=g)), int(torch.randint(2, 20, (1,), generator=g))
        s = torch.randint(0, 3, (h, w), generator=g).float()
        if t % 2:
            s[torch.rand(h, w, generator=g) < 0.2] = -math.inf
        n, r = int(torch.randint(1, 12, (1,), generator=g)), int(torch.randint(0, 3, (1,), generator=g))
        ref, _, _ = ref_select(s, torch.zeros(h, w, dtype=torch.bool), n, 0, r)
        assert active.greedy_select_reference(s, n, r) == ref, t
        assert active.greedy_select(s, n, r) == ref, t


# ---------------------------------------------------------------------------------------------
# multi-round selection: persistence, budgets, original-resolution picking
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["region", "pixel"])
def test_multi_round_selection_with_persistent_suppression(mode):
    c, h, w, rounds = 5, 20, 28, 3
    budget = annotation.Budget(mode, 0.08, rounds, 1, points=9, rounding="ceil")
    mask_r, label_r = (2, 1) if mode == "region" else (3, 0)
    state = annotation.AnnotationState.empty(1, h, w)
    act = torch.zeros(h, w, dtype=torch.bool)
    lab = torch.zeros(h, w, dtype=torch.bool)
    for r in range(rounds):
        p = _probs(100 + r, c, h, w, quant=2)
        score = ref_ra_score(p[0], 1) if mode == "region" else ref_pa_score(p[0], mask_r)
        n = math.ceil(h * w * 0.08 / rounds / 9) if mode == "region" else math.ceil(9 / rounds)
        ref_picks, new_lab, act = ref_select(score, act, n, label_r, mask_r)
        lab |= new_lab
        picks = annotation.select_round(p, state, [0], budget, suppress=mask_r, round_idx=r)[0]
        # kit scores are float32: compare picks where the reference order is not a float tie
        assert picks == ref_picks, (mode, r)
        assert torch.equal(state.mask[0], lab) and torch.equal(state.active[0], act)
        assert state.round_map[0][new_lab & (state.round_map[0] == r)].numel() == int((lab & new_lab).sum())
    # persistence matters: without it, later rounds may pick inside earlier suppression windows
    st2 = annotation.AnnotationState.empty(1, h, w)
    for r in range(rounds):
        annotation.select_round(_probs(100 + r, c, h, w, quant=2), st2, [0], budget, suppress=mask_r, round_idx=r,
                            persist_suppression=False)
    assert st2.labeled_pixels >= state.labeled_pixels


def test_official_budget_formulas():
    # RA: ceil(2048*1024 * 0.022/5 / 9) = ceil(1025.28) = 1026 regions per image and round
    assert annotation.Budget("region", 0.022, 5, 1, rounding="ceil").picks_per_round(1024, 2048) == 1026
    assert annotation.Budget("region", 0.022, 5, 1).picks_per_round(1024, 2048) == 1025   # "exact" (kit)
    # PA: ceil(40 / 5 / (1280*640) * (2048*1024)) = ceil(20.48) = 21 picks per image and round
    scale = 2048 * 1024 / (1280 * 640)
    assert annotation.Budget("pixel", rounds=5, points=40, pixel_scale=scale).picks_per_round(1024, 2048) == 21
    assert math.ceil(40 / 5 / (1280 * 640) * (2048 * 1024)) == 21
    # at the toy profiles selection and training size agree: ceil(points / rounds)
    assert annotation.Budget("pixel", rounds=5, points=40).picks_per_round(64, 128) == 8
    cfg = resolve("paper", "ripu")
    assert cfg["budget_rounding"] == "ceil" and cfg["select_size"] == "label" and cfg["pa_suppress"] == 32
    assert cfg["tie_order"] == "column" and cfg["persist_suppression"] and cfg["cr_variant"] == "official"


class _Images(torch.utils.data.Dataset):
    """Images at ``size`` and labels at ``label_size`` (a smooth class field), ``n`` items."""

    num_classes, classes = 4, ("a", "b", "c", "d")

    def __init__(self, n, size, label_size):
        self.n, self.size, self.label_size = n, size, label_size

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        x = torch.rand(3, *self.size, generator=g)
        field = torch.randn(1, 4, 3, 5, generator=g)
        y = F.interpolate(field, size=self.label_size, mode="bilinear", align_corners=False)[0].argmax(0)
        y[0, 0] = 255
        return x, y


class _Net(nn.Module):
    """Logits at 1/2 of the input size, like a (very) small segmenter."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)

    def forward(self, x):
        return {"out": self.conv(x) * 4}


@pytest.mark.parametrize("mode", ["region", "pixel"])
def test_select_on_pool_picks_at_label_resolution(tmp_path, mode):
    train, full = (8, 12), (16, 24)
    base, labels = _Images(3, train, train), _Images(3, train, full)
    pool = ripu.ActivePool(base, labels=labels, storage=tmp_path / "pool")
    assert (pool.h, pool.w) == full and pool.train_size == train
    cfg = resolve("smoke", "ripu", mode=mode, budget=0.1, rounds=2, select_at=[0, 2], pa_points=3, pa_suppress=2,
                  budget_rounding="ceil", amp="off")
    net = _Net().eval()
    act = torch.zeros(3, *full, dtype=torch.bool)
    lab = torch.zeros(3, *full, dtype=torch.bool)
    for r in range(2):
        ripu.select_on_pool(net, pool, cfg, r)
        for i in range(3):
            x = base[i][0][None]
            with torch.no_grad():
                lg = F.interpolate(net(x)["out"], size=full, mode="bilinear", align_corners=True)
            p = lg.softmax(1)[0]
            if mode == "region":
                n = math.ceil(full[0] * full[1] * 0.1 / 2 / 9)
                _, new, act[i] = ref_select(ref_ra_score(p, 1), act[i], n, 1, 2)
            else:   # ceil(3 / 2 * (16*24)/(8*12)) = 6 picks per round
                n = math.ceil(3 / 2 * 4)
                _, new, act[i] = ref_select(ref_pa_score(p, 2), act[i], n, 0, 2)
            lab[i] |= new
        assert torch.equal(pool.state.mask, lab), r
        assert torch.equal(pool.state.active, act), r
    # the dataset resizes the masked full-size label to the training size (nearest, pixel centres)
    for i in range(3):
        y = labels[i][1].clone()
        y[~lab[i]] = 255
        want = F.interpolate(y[None, None].float(), size=train, mode="nearest-exact")[0, 0].long()
        assert torch.equal(pool[i][1], want)


def test_toy_world_label_resolution_dataset(tmp_path):
    cfg = resolve("smoke", "ripu", size=[32, 64], eval_size=[64, 128])
    from kit.data import make_da_datasets

    ds = make_da_datasets(cfg)
    lab = ripu.label_resolution_dataset(cfg, ds["target_train"])
    assert tuple(lab[0][1].shape) == (64, 128)
    assert ripu.label_resolution_dataset(resolve("smoke", "ripu", size=[32, 64], eval_size=[64, 128],
                                                 select_size="train"), ds["target_train"]) is None
    assert ripu.label_resolution_dataset(resolve("smoke", "ripu"), make_da_datasets(resolve("smoke", "ripu"))[
        "target_train"]) is None   # toy profiles: training size == label size
    pool = ripu.ActivePool(ds["target_train"], 4, labels=lab)
    assert (pool.h, pool.w) == (64, 128) and tuple(pool[0][1].shape) == (32, 64)


# ---------------------------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------------------------
def ref_boundary(lab):                    # [H,W] int -> bool
    h, w = lab.shape
    pad = torch.zeros(h + 2, w + 2, dtype=torch.float64)
    pad[1:-1, 1:-1] = lab.double()
    out = torch.zeros(h, w, dtype=torch.bool)
    for i in range(h):
        for j in range(w):
            v = 9 * pad[i + 1, j + 1] - pad[i:i + 3, j:j + 3].sum()   # 8*centre - the 8 neighbours
            out[i, j] = bool(v != 0) and int(lab[i, j]) != 255
    return out


def ref_lcr(logits, labels):
    lg = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=True)
    total, count = 0.0, 0
    for b in range(lg.shape[0]):
        p = lg[b].softmax(0).double()
        _, h, w = p.shape
        m = ref_boundary(labels[b])
        for i in range(h):
            for j in range(w):
                if not m[i, j]:
                    continue
                nb = [p[:, min(max(i + di, 0), h - 1), min(max(j + dj, 0), w - 1)]   # replicate padding
                      for di in (-1, 0, 1) for dj in (-1, 0, 1)]
                total += float((p[:, i, j] - torch.stack(nb).sum(0) / 9).abs().sum())
                count += 1
    return total / count


def test_local_consistency_matches_official():
    g = torch.Generator().manual_seed(3)
    labels = F.interpolate(torch.randn(2, 4, 3, 4, generator=g), size=(10, 14), mode="bilinear").argmax(1)
    labels[0, 4:6, 5:8] = 255
    logits = torch.randn(2, 4, 5, 7, generator=g) * 2
    for b in range(2):
        assert torch.equal(losses.ripu_boundary_mask(labels)[b], ref_boundary(labels[b]))
    # every border pixel with a non-zero id is a boundary
    border = torch.ones(10, 14, dtype=torch.bool)
    border[1:-1, 1:-1] = False
    m = losses.ripu_boundary_mask(labels)[0]
    assert bool(m[border & (labels[0] != 0) & (labels[0] != 255)].all())
    assert float(losses.local_consistency_loss(logits, labels)) == pytest.approx(ref_lcr(logits, labels), rel=1e-5)


def ref_nl(logits, size, tau=0.05):
    p = F.interpolate(logits, size=size, mode="bilinear", align_corners=True).softmax(1).double()
    neg = p < tau
    return float(-(torch.log(1 - p) * neg).sum() / neg.sum())


def test_negative_learning_at_training_resolution(tmp_path, monkeypatch):
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 6, 4, 8, generator=g) * 3
    got = float(losses.negative_learning_loss(logits, 0.05, size=(32, 64)))
    assert got == pytest.approx(ref_nl(logits, (32, 64)), rel=1e-4)
    assert got != pytest.approx(float(losses.negative_learning_loss(logits, 0.05)), rel=1e-4)
    # the training step hands the input's size to L_nl
    seen = []
    orig = losses.negative_learning_loss

    def spy(lg, tau=0.05, eps=1e-6, size=None):
        seen.append((tuple(lg.shape[-2:]), None if size is None else tuple(size)))
        return orig(lg, tau, eps, size)

    monkeypatch.setattr(losses, "negative_learning_loss", spy)
    cfg = resolve("smoke", "ripu", cache_dir=str(tmp_path), init="pretrained", iters=1, rounds=1,
                  select_at=[0], eval_items=2)
    ripu.train_ripu(cfg, 0)
    assert seen and seen[0][1] == tuple(cfg["size"]) and seen[0][0] != seen[0][1]


# ---------------------------------------------------------------------------------------------
# labels reach training: worker processes and resume
# ---------------------------------------------------------------------------------------------
def test_labels_reach_dataloader_workers_started_before_the_round(tmp_path):
    from kit.engine import BatchStream

    pool = ripu.ActivePool(_Images(4, (8, 12), (8, 12)), storage=tmp_path / "pool")
    stream = BatchStream(pool, 4, seed=0, shuffle=False, num_workers=2)
    first = next(stream)[1]
    assert bool((first == 255).all())    # workers are running, nothing labelled yet
    lab = torch.zeros(8, 12, dtype=torch.bool)
    lab[2:5, 3:6] = True
    pool.state.mark(1, lab, lab, 0)       # a selection round, after the workers started
    pool.state.mark(3, torch.ones(8, 12, dtype=torch.bool), torch.ones(8, 12, dtype=torch.bool), 0)
    later = [next(stream)[1] for _ in range(8)]   # past the batches prefetched before the round
    y1, y3 = pool.base[1][1], pool.base[3][1]
    want1 = torch.where(lab, y1, torch.full_like(y1, 255))
    assert torch.equal(later[-1][1], want1) and torch.equal(later[-1][3], y3)
    assert bool((later[-1][0] == 255).all())


def test_training_with_two_workers_sees_selected_labels(tmp_path, monkeypatch):
    seen = []
    orig = ripu.RIPUStep.__call__

    def spy(self, batch, engine):
        seen.append(int((batch["target"][1] != 255).sum()))
        return orig(self, batch, engine)

    monkeypatch.setattr(ripu.RIPUStep, "__call__", spy)
    cfg = resolve("smoke", "ripu", cache_dir=str(tmp_path), init="pretrained", iters=12, select_at=[0, 1],
                  budget=0.2, num_workers=2, eval_items=2, lambda_cr=0.0)
    _, pool, _ = ripu.train_ripu(cfg, 0)
    assert pool.state.labeled_pixels > 0
    assert seen[0] == 0 and max(seen[8:]) > 0, seen   # labels arrive once the prefetched batches are used


class _Kill(Exception):
    pass


def test_kill_and_resume_keeps_and_redoes_rounds(tmp_path, monkeypatch):
    from kit.data import make_da_datasets

    cfg = resolve("smoke", "ripu", cache_dir=str(tmp_path / "cache"), init="pretrained", iters=6,
                  select_at=[0, 3], budget=0.2, eval_items=2, amp="off")
    ds = make_da_datasets(cfg)
    model_a, pool_a, _ = ripu.train_ripu(cfg, 0, ds)               # uninterrupted
    orig = ripu.RIPUStep.__call__

    def dies(self, batch, engine):
        out = orig(self, batch, engine)
        if engine.it == 3:                 # round 1 written to the pool file, last checkpoint at it=2
            raise _Kill()
        return out

    monkeypatch.setattr(ripu.RIPUStep, "__call__", dies)
    with pytest.raises(_Kill):
        ripu.train_ripu(cfg, 0, ds, run_dir=tmp_path / "run", checkpoint_every=2)
    monkeypatch.setattr(ripu.RIPUStep, "__call__", orig)
    pool_file = np.memmap(tmp_path / "run" / "ripu_pool" / ripu.ActivePool.FILE, dtype=np.uint8, mode="r")
    assert int(pool_file.max()) == 2      # round 1 is on disk although the checkpoint predates it
    model_b, pool_b, _ = ripu.train_ripu(cfg, 0, ds, run_dir=tmp_path / "run", checkpoint_every=2)
    assert torch.equal(pool_b.round_map, pool_a.round_map)
    assert [h["round"] for h in pool_b.state.history] == [0, 1]
    for (k, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5), k


# ---------------------------------------------------------------------------------------------
# the official source-free configuration
# ---------------------------------------------------------------------------------------------
def test_source_free_preset():
    cfg = ripu.preset_config("ra_source_free")
    assert cfg["source_free"] and cfg["radius_k"] == 9 and cfg["budget"] == 0.022
    assert cfg["select_at"] == [0, 2000, 4000, 6000, 8000] and cfg["max_iters"] == 30000
    assert cfg["init"] == "source_only" and cfg["iters"] == 62500
    assert ripu.preset_config("ra_source_free", pool_size=4)["pool_size"] == 4
    with pytest.raises(ValueError, match="paper"):
        ripu.preset_config("ra_source_free", "quick")
    with pytest.raises(ValueError, match="preset"):
        ripu.preset_config("pa_source_free")


def test_cityscapes_label_resolution_dataset(tmp_path):
    """Real data: selection reads the label files at their full size, the images at the training size."""
    from kit.data import real
    from kit.data.transforms import Resize
    from tests.test_real_data import H, W, make_cityscapes

    make_cityscapes(tmp_path / "cityscapes")
    train = real.Cityscapes(tmp_path / "cityscapes", "train", transform=Resize((H // 2, W // 2)))
    cfg = {**resolve("smoke", "ripu"), "size": [H // 2, W // 2]}   # below the config minimum, fine here
    lab = ripu.label_resolution_dataset(cfg, train)
    assert tuple(lab[0][1].shape) == (H, W) and tuple(lab[0][0].shape[-2:]) == (H // 2, W // 2)
    pool = ripu.ActivePool(train, labels=lab)
    assert (pool.h, pool.w) == (H, W) and tuple(pool[0][1].shape) == (H // 2, W // 2)


def test_cross_entropies_upsample_with_aligned_corners_as_the_official_code(monkeypatch, tmp_path):
    """Official RIPU: F.interpolate(..., mode="bilinear", align_corners=True) before both CEs."""
    import torch.nn.functional as F

    from kit import losses as kl

    torch.manual_seed(0)
    logits, labels = torch.randn(2, 4, 4, 8), torch.randint(0, 4, (2, 16, 32))
    ref = F.cross_entropy(F.interpolate(logits, size=(16, 32), mode="bilinear", align_corners=True), labels)
    torch.testing.assert_close(kl.seg_loss(logits, labels, align_corners=True), ref)
    assert not torch.allclose(kl.seg_loss(logits, labels), ref)          # the kit's default differs
    seen = []
    orig = kl.seg_loss

    def spy(lg, lab, *a, **k):
        seen.append(k.get("align_corners", False))
        return orig(lg, lab, *a, **k)

    monkeypatch.setattr(kl, "seg_loss", spy)
    cfg = resolve("smoke", "ripu", cache_dir=str(tmp_path), init="pretrained", iters=1, rounds=1,
                  select_at=[0], eval_items=2)
    ripu.train_ripu(cfg, 0)
    assert len(seen) >= 2 and all(seen)        # source CE and target CE of the training step
