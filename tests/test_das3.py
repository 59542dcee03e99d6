"""DAS3: losses against hand-computed values, pseudo-label thresholds, ClassMix, the stages."""
from __future__ import annotations

import inspect
import math

import pytest
import torch

from kit import losses
from kit.config import resolve
from kit.data import ToyWorld
from kit.data.mixing import class_mix, class_mix_batch
from kit.data.wrappers import Unlabeled
from kit.fit import fit, key_of
from kit.methods import das3
from kit.methods.supervised import build_model


def logits_of(*probs) -> torch.Tensor:
    """[1,C,1,N] logits whose softmax is the given per-pixel probability vectors."""
    p = torch.tensor(probs, dtype=torch.float64).T  # [C,N]
    return torch.log(p).float().reshape(1, p.shape[0], 1, p.shape[1])


def h_norm(*p) -> float:
    return -sum(v * math.log(v) for v in p if v > 0) / math.log(len(p))


# ---------------------------------------------------------------------------------- losses
def test_normalized_entropy_hand_value():
    p = logits_of((0.5, 0.25, 0.25)).softmax(1)
    expected = (0.5 * math.log(2) + 2 * 0.25 * math.log(4)) / math.log(3)  # 0.9464
    assert losses.normalized_entropy(p).item() == pytest.approx(expected, abs=1e-5)


def test_entropy_loss_hand_value():
    l = logits_of((0.5, 0.25, 0.25), (1 / 3, 1 / 3, 1 / 3))
    expected = (h_norm(0.5, 0.25, 0.25) + 1.0) / 2
    assert losses.entropy_loss(l).item() == pytest.approx(expected, abs=1e-5)


def test_focal_entropic_hand_value():
    # p = (0.8, 0.2): H = 0.7219; gamma = 2: (1 - H)^2 H = 0.0558
    h = h_norm(0.8, 0.2)
    assert h == pytest.approx(0.7219, abs=1e-4)
    got = losses.focal_entropic_loss(logits_of((0.8, 0.2)), gamma=2.0).item()
    assert got == pytest.approx((1 - h) ** 2 * h, abs=1e-5)
    assert got == pytest.approx(0.0558, abs=1e-4)
    # gamma = 0 is plain entropy minimization
    l = torch.randn(2, 5, 3, 4)
    assert losses.focal_entropic_loss(l, 0.0).item() == pytest.approx(losses.entropy_loss(l).item(), abs=1e-6)


@pytest.mark.parametrize("gamma", [1.0, 3.0, 5.0])
def test_focal_entropic_zero_at_ends_and_peak(gamma):
    # H = 0 (one-hot) and H = 1 (uniform) give 0
    assert losses.focal_entropic_loss(torch.tensor([60.0, -60.0]).view(1, 2, 1, 1), gamma).item() == pytest.approx(0, abs=1e-6)
    assert losses.focal_entropic_loss(torch.zeros(1, 4, 2, 2), gamma).item() == pytest.approx(0, abs=1e-6)
    # the peak over H is at H = 1 / (1 + gamma)
    p = torch.linspace(0.5, 0.99999, 20001)
    logits = torch.log(torch.stack([p, 1 - p])).view(2, 1, -1)[None]      # [1,2,1,N], one pixel per p
    h = losses.normalized_entropy(logits.softmax(1)).flatten()
    per_pixel = torch.vmap(lambda l: losses.focal_entropic_loss(l[None], gamma))(logits[0].permute(2, 0, 1)[..., None])
    h_star = h[per_pixel.argmax()].item()
    assert h_star == pytest.approx(1 / (1 + gamma), abs=2e-3)


def test_weighted_diversity_hand_value_and_detached_weights():
    # pixel 1: p = (0.9, 0.1); pixel 2: p = (0.5, 0.5) (H = 1); alpha = 1
    l = logits_of((0.9, 0.1), (0.5, 0.5)).requires_grad_(True)
    w1, w2 = math.exp(-h_norm(0.9, 0.1)), math.exp(-1.0)
    pb = [(w1 * 0.9 + w2 * 0.5) / (w1 + w2), (w1 * 0.1 + w2 * 0.5) / (w1 + w2)]
    expected = sum(v * math.log(v) for v in pb)
    got = losses.weighted_diversity_loss(l, alpha=1.0)
    assert got.item() == pytest.approx(expected, abs=1e-5)
    # the weights are detached: the gradient equals that of the same formula with constant weights
    got.backward()
    l2 = l.detach().clone().requires_grad_(True)
    prob = l2.softmax(1)
    w = torch.tensor([w1, w2]).view(1, 1, 1, 2)
    p_bar = (prob * w).sum((0, 2, 3)) / w.sum()
    (p_bar * p_bar.log()).sum().backward()
    assert torch.allclose(l.grad, l2.grad, atol=1e-6)
    # alpha = 0: the plain batch-mean prediction
    p0 = [(0.9 + 0.5) / 2, (0.1 + 0.5) / 2]
    assert losses.weighted_diversity_loss(l.detach(), 0.0).item() == pytest.approx(sum(v * math.log(v) for v in p0), abs=1e-5)


def test_negative_pseudo_label_loss_hand_value():
    l = logits_of((0.5, 0.25, 0.25), (0.7, 0.2, 0.1))
    neg = losses.negative_labels(l.softmax(1), threshold=0.22)   # entries 0.2 and 0.1 of pixel 2
    assert neg.flatten().tolist() == [False, False, False, True, False, True]
    expected = -(math.log(1 - 0.2) + math.log(1 - 0.1)) / 2
    assert losses.negative_pseudo_label_loss(l, neg).item() == pytest.approx(expected, abs=1e-5)
    # no negative entry -> 0, with a gradient path
    z = losses.negative_pseudo_label_loss(l.requires_grad_(True), torch.zeros_like(neg))
    assert z.item() == 0.0 and z.requires_grad
    with pytest.raises(ValueError, match="bool"):
        losses.negative_pseudo_label_loss(l, neg.float())


def test_classwise_thresholds_hand_value():
    conf = torch.tensor([0.99, 0.98, 0.97, 0.96, 0.40, 0.30, 0.20])
    pred = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    thr = losses.classwise_thresholds(conf, pred, 3, top_k=0.5)
    # class 0: ceil(0.5 * 4) = 2nd largest = 0.98; class 1: ceil(1.5) = 2nd largest = 0.30; class 2: none
    assert thr[0].item() == pytest.approx(0.98) and thr[1].item() == pytest.approx(0.30) and math.isinf(thr[2])
    assert losses.global_threshold(conf, top_k=0.5) == pytest.approx(0.96)   # 4th of 7
    with pytest.raises(ValueError, match="top_k"):
        losses.classwise_thresholds(conf, pred, 3, top_k=0.0)


def test_classwise_thresholds_keep_a_label_for_every_predicted_class():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 6, 16, 16, generator=g) * 3
    logits[:, 5] -= 4.0          # class 5: rare and unconfident
    prob = logits.softmax(1)
    conf, pred = prob.max(1)
    for top_k in (0.01, 0.2, 0.5, 1.0):
        thr = losses.classwise_thresholds(conf, pred, 6, top_k)
        y = losses.positive_pseudo_labels(prob, thr)
        for c in pred.unique().tolist():
            assert (y == c).sum() >= 1, f"class {c} lost all its labels at top_k={top_k}"
        assert set(y.unique().tolist()) - {255} == set(pred.unique().tolist())
    # one global threshold keeping the same share drops the rare class
    assert (pred == 5).any()
    y_glob = losses.positive_pseudo_labels(prob, losses.global_threshold(conf, 0.2))
    assert (y_glob == 5).sum() < (losses.positive_pseudo_labels(prob, losses.classwise_thresholds(conf, pred, 6, 0.2)) == 5).sum()


def test_positive_pseudo_labels_checks():
    with pytest.raises(ValueError, match="one threshold per class"):
        losses.positive_pseudo_labels(torch.rand(1, 3, 2, 2), torch.ones(2))


# ---------------------------------------------------------------------------------- ClassMix
def test_class_mix_keeps_image_and_label_aligned():
    g = torch.Generator().manual_seed(1)
    la = torch.randint(0, 5, (3, 8, 12), generator=g)
    lb = torch.randint(5, 9, (3, 8, 12), generator=g)
    ia = la[:, None].float().expand(-1, 3, -1, -1) / 10     # an image whose colour encodes its label
    ib = lb[:, None].float().expand(-1, 3, -1, -1) / 10
    img, lab, mask = class_mix_batch(ia, la, la, ib, lb, generator=g)
    assert torch.equal((img[:, 0] * 10).round().long(), lab)        # every pixel: colour and label agree
    assert torch.equal(lab[mask], la[mask]) and torch.equal(lab[~mask], lb[~mask])
    for i in range(3):   # half of the classes of A (rounded up) are pasted, whole
        present = la[i].unique()
        pasted = la[i][mask[i]].unique()
        assert pasted.numel() == math.ceil(present.numel() / 2)
        assert torch.equal(mask[i], torch.isin(la[i], pasted))


def test_class_mix_checks_shapes():
    with pytest.raises(ValueError, match="mask must be bool"):
        class_mix(torch.zeros(3, 2, 2), torch.zeros(2, 2), torch.zeros(3, 2, 2), torch.zeros(2, 2),
                  torch.zeros(2, 2))


# ---------------------------------------------------------------------------------- stages
@pytest.fixture(scope="module")
def tiny():
    cfg = resolve("smoke", "das3", batch_size=4, stage1_iters=2, stage2_iters=2, stage3_iters=2, device="cpu",
                  n_train=16, n_val=8)
    torch.manual_seed(0)
    model = build_model(cfg, 11)
    target = ToyWorld("real", "train", tuple(cfg.size), 16)
    return cfg, model, target


def test_the_api_accepts_no_source_data():
    params = list(inspect.signature(das3.adapt).parameters)
    assert params == ["source_model", "target", "cfg", "seed", "stages"]
    for fn in (das3.stage1_align, das3.stage2_self_train, das3.stage3_propagate):
        assert list(inspect.signature(fn).parameters) == ["model", "target", "cfg", "seed"]
    ds = Unlabeled(ToyWorld("real", "train", (32, 64), 4))
    x, i = ds[2]
    assert x.shape == (3, 32, 64) and int(i) == 2       # the label is not handed out


def test_stage1_freezes_the_classifier(tiny):
    cfg, model, target = tiny
    res = das3.stage1_align(model, target, cfg, seed=0)
    for (n, p0), p1 in zip(model.named_parameters(), res.model.parameters()):
        if n.startswith("head."):
            assert torch.equal(p0, p1), f"classifier parameter {n} changed in stage 1"
    assert any(not torch.equal(p0, p1) for p0, p1 in zip(model.backbone.parameters(), res.model.backbone.parameters()))
    assert all(p.requires_grad for p in res.model.parameters())


def test_stage2_uses_negative_labels(tiny):
    cfg, model, target = tiny
    res = das3.stage2_self_train(model, target, cfg, seed=0)
    assert "neg" in res.history.train[-1] and len(res.info["thresholds"]) == 11
    pos_only = das3.stage2_self_train(model, target, dict(cfg, neg_weight=0.0), seed=0)
    assert "neg" not in pos_only.history.train[-1]


def test_stage3_teacher_is_frozen(tiny):
    cfg, model, target = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = das3.stage3_propagate(model, target, cfg, seed=0)
    teacher = res.teacher
    assert teacher is not model and teacher is not res.model
    assert not teacher.training
    assert all(not p.requires_grad for p in teacher.parameters())
    for k, v in teacher.state_dict().items():      # weights and BN statistics: those of the stage-2 model
        assert torch.equal(v.cpu(), before[k]), f"teacher entry {k} changed"
    for k, v in model.state_dict().items():        # the input model is untouched too
        assert torch.equal(v, before[k])
    assert any(not torch.equal(a, b) for a, b in zip(res.model.parameters(), teacher.parameters()))
    easy, hard = res.info["easy"], res.info["hard"]
    assert len(easy) == round(0.3 * 16) and sorted(easy + hard) == list(range(16))
    ent = dict(zip(res.info["items"], res.info["entropy"]))
    assert max(ent[i] for i in easy) <= min(ent[i] for i in hard)


def test_adapt_chains_and_cache_reuses(tiny, tmp_path):
    cfg, model, target = tiny
    cfg = dict(cfg, cache_dir=str(tmp_path))
    out = das3.adapt(model, target, cfg, seed=0, stages=(1, 2))
    assert set(out) == {1, 2}
    # the cached stage, through the one runner, from this source model (a weights file: keyed by its content)
    src = tmp_path / "src.pt"
    torch.save(model.state_dict(), src)
    val = ToyWorld("real", "val", tuple(cfg["size"]), 8)
    data = {"target_train": target, "target_val": val}
    cfg_src = dict(cfg, source_checkpoint=str(src))
    first = fit("das3", cfg_src, 0, data, stage=1)
    meta1 = first.meta
    assert not first.cached and 0 <= meta1["eval"]["miou"] <= 100
    assert first.key == key_of("das3", cfg_src, 0, data, stage=1) and set(first.parts["stages"]) == {1}
    # the same training as das3.adapt of the same model (CPU, same seed)
    assert all(torch.equal(a, b.cpu())
               for a, b in zip(first.model.state_dict().values(), out[1].model.state_dict().values()))
    again = fit("das3", cfg_src, 0, data, stage=1)
    assert again.cached and again.meta["eval"]["miou"] == pytest.approx(meta1["eval"]["miou"])
    assert again.key == first.key
    assert all(torch.equal(a, b) for a, b in zip(first.model.state_dict().values(), again.model.state_dict().values()))
    # another source model, another key (no val split: no eval)
    torch.manual_seed(1)
    other = tmp_path / "another-source.pt"
    torch.save(build_model(cfg, 11).state_dict(), other)
    cfg_other = dict(cfg, source_checkpoint=str(other))
    f_other = fit("das3", cfg_other, 0, {"target_train": target}, stage=1)
    assert not f_other.cached and "eval" not in f_other.meta
    assert f_other.key != first.key == key_of("das3", cfg_src, 0, {"target_train": target}, stage=1)
    with pytest.raises(ValueError, match="stage"):
        das3.adapt(model, target, cfg, stages=(4,))


def test_bad_config_values_fail_clearly(tiny):
    cfg, model, target = tiny
    with pytest.raises(ValueError, match="stage1_loss"):
        das3.stage1_align(model, target, dict(cfg, stage1_loss="kl"))
    with pytest.raises(ValueError, match="threshold_mode"):
        das3.stage2_self_train(model, target, dict(cfg, threshold_mode="median"))
    with pytest.raises(ValueError, match="easy_ratio"):
        das3.stage3_propagate(model, target, dict(cfg, easy_ratio=1.5))
    with pytest.raises(ValueError, match="focal_grad"):
        das3.stage1_align(model, target, dict(cfg, focal_grad="weight"))
    with pytest.raises(ValueError, match="stage3"):
        das3.stage3_propagate(model, target, dict(cfg, stage3="official"))


# ---------------------------------------------------------------------------------- paper profile
def test_paper_profile_runs_from_a_checkpoint_on_cpu(tmp_path):
    """The paper profile's network (DeepLab-v2 ResNet-101, width 64, frozen BN, SGD with 10x
    heads) built from a source checkpoint file, then one iteration of each stage on CPU.
    Sizes are cut down so it runs in seconds: 64x128 images, 4 target images, batch 2,
    one iteration per stage, no evaluation."""
    cfg = resolve("paper", "das3", size=[64, 128], source_size=[64, 128], eval_size=[64, 128], n_train=4, n_val=2,
                  batch_size=2, stage1_iters=1, stage2_iters=1, stage3_iters=1, eval_batch_size=2, num_workers=0,
                  device="cpu", progress=False, scan_pixels=256, cache_dir=str(tmp_path / "cache"))
    assert cfg.depth == 101 and cfg.optimizer == "sgd" and cfg.stage1_lr == cfg.stage2_lr == cfg.stage3_lr == 2.5e-4 and cfg.head_lr_mult == 10.0
    ckpt = tmp_path / "source.pt"
    torch.manual_seed(0)
    torch.save(build_model(cfg, 11).state_dict(), ckpt)
    assert das3.source_parent(cfg).method == "source_only"     # no checkpoint: the kit's source-only model
    cfg = dict(cfg, source_checkpoint=str(ckpt))
    parent = das3.source_parent(cfg)
    assert parent.method == "weights_file" and dict(parent.spec) == {"path": str(ckpt)}
    target = ToyWorld("real", "train", tuple(cfg["size"]), 4)
    source = fit(parent.method, parent.cfg, 0, {"target_train": target}, **parent.spec)
    model = source.model
    assert source.key.startswith("file-") and source.cached
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in torch.load(ckpt, weights_only=True).items())
    out = das3.adapt(model, target, cfg, seed=0)
    assert set(out) == {1, 2, 3}
    assert out[3].model.head.convs[0].weight.shape[0] == 11
    missing = das3.source_parent(dict(cfg, source_checkpoint=str(tmp_path / "missing.pt")))
    with pytest.raises(FileNotFoundError, match="missing.pt does not exist"):
        fit(missing.method, missing.cfg, 0, {"target_train": target}, **missing.spec)
