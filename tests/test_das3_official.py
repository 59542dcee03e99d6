"""DAS3 against the official semantics, stated here in small independent code.

* The focal entropic term [DAS3 stage 1], as the authors' code computes it (yxiwang/ATP,
  ``mmseg/models/losses/cross_entropy_loss.py``, ``EntropyLoss``): with ``H`` the entropy of
  each pixel's softmax divided by ``log C``, the loss is the pixel mean of ``(1 - H)^5 * H``
  (times 0.001), differentiated as written -- no stop-gradient on the factor. That is the
  kit's default (``focal_grad="through"``); one gradient step raises the entropy of the pixels
  above ``H = 1/(1 + gamma)``. Read as a weight (``"detached"``, an ablation), one step lowers
  the entropy of every pixel.
* Stage 3 as in the authors' later code (ATP, ``atp_semi.py``; ``stage3="atp"``): an EMA
  teacher ``a = min(1 - 1/(t+1), 0.999)``, easy images = the 30% of lowest mean normalized
  entropy, easy images labelled by the teacher's plain argmax, hard pixels weighted by
  the share of the batch's hard pixels whose teacher confidence reaches 0.968.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from kit import losses, methods
from kit.config import resolve
from kit.data import ToyWorld
from kit.data.transforms import strong_augment
from kit.fit import key_of
from kit.methods import das3, das3_atp, das3_scan
from kit.methods.supervised import build_model
from kit.models.utils import ema_alpha_at, ema_update


# ---------------------------------------------------------------------------------- references
def ref_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Normalized entropy per pixel of logits [B,C,H,W] (double precision)."""
    p = logits.double().softmax(1)
    return -(p * p.clamp_min(1e-300).log()).sum(1) / math.log(logits.shape[1])


def two_class_pixel(p_max: float) -> torch.Tensor:
    return torch.log(torch.tensor([p_max, 1.0 - p_max])).view(1, 2, 1, 1)


def one_step(logits: torch.Tensor, loss_fn, lr: float = 0.5) -> torch.Tensor:
    """The logits after one gradient-descent step on ``loss_fn(logits)``."""
    x = logits.clone().requires_grad_(True)
    loss_fn(x).backward()
    return (x - lr * x.grad).detach()


def stage_key(stage: int, cfg, prev: str = "src") -> dict:
    """What identifies DAS3 stage ``stage`` (the declaration's key, :func:`kit.cache.model_key`)
    started from a model whose cache name is ``prev``."""
    return methods.get("das3").key(cfg, 0, {"target_train": None}, {"stage": stage}, {"input": prev})


# ---------------------------------------------------------------------------------- focal term
GAMMA = 5.0


@pytest.mark.parametrize("p_max", [0.6, 0.7, 0.8, 0.9])
def test_detached_focal_step_lowers_the_entropy_of_an_uncertain_pixel(p_max):
    x = two_class_pixel(p_max)
    h0 = ref_entropy(x).item()
    assert h0 > 1 / (1 + GAMMA)                       # an uncertain pixel: beyond the peak of (1-H)^g H
    h1 = ref_entropy(one_step(x, lambda l: losses.focal_entropic_loss(l, GAMMA, "detached"))).item()
    assert h1 <= h0                                   # never raised ...
    if p_max >= 0.7:                                  # ... and lowered wherever the weight is not ~0 in fp32
        assert h1 < h0                                # (at p = 0.6 the weight (1 - H)^5 is 2e-8)


@pytest.mark.parametrize("p_max", [0.6, 0.7, 0.8, 0.9])
def test_through_focal_step_raises_the_entropy_of_an_uncertain_pixel(p_max):
    x = two_class_pixel(p_max)
    h0 = ref_entropy(x).item()
    h1 = ref_entropy(one_step(x, lambda l: losses.focal_entropic_loss(l, GAMMA, "through"))).item()
    assert h1 > h0


@pytest.mark.parametrize("mode", ["detached", "through"])
def test_both_forms_lower_the_entropy_of_a_confident_pixel(mode):
    x = two_class_pixel(0.995)                         # H = 0.045 < 1/6: below the peak
    h0 = ref_entropy(x).item()
    assert h0 < 1 / (1 + GAMMA)
    assert ref_entropy(one_step(x, lambda l: losses.focal_entropic_loss(l, GAMMA, mode), lr=0.05)).item() < h0


def test_focal_gradients_match_the_two_readings():
    """d loss / d logits = f(H) dH/d logits / N, with f = (1-H)^g (a weight) or
    f = d/dH[(1-H)^g H] = (1-H)^(g-1) (1 - (1+g) H) (the factor differentiated too)."""
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(2, 5, 3, 4, generator=g) * 2).double()
    x = logits.clone().requires_grad_(True)
    h = ref_entropy(x)
    n = h.numel()
    for mode, f in (("detached", (1 - h) ** GAMMA),
                    ("through", (1 - h) ** (GAMMA - 1) * (1 - (1 + GAMMA) * h))):
        (ref_grad,) = torch.autograd.grad((f.detach() * h).sum() / n, x, retain_graph=True)
        y = logits.float().clone().requires_grad_(True)
        losses.focal_entropic_loss(y, GAMMA, mode).backward()
        assert torch.allclose(y.grad.double(), ref_grad, atol=1e-6), mode
        # same value in both readings
        assert losses.focal_entropic_loss(logits.float(), GAMMA, mode).item() == pytest.approx(
            ((1 - h) ** GAMMA * h).mean().item(), abs=1e-6)


def test_detached_focal_step_lowers_every_pixels_entropy():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 6, 8, 8, generator=g) * 1.5
    h0 = ref_entropy(x)
    h1 = ref_entropy(one_step(x, lambda l: losses.focal_entropic_loss(l, GAMMA, "detached"), lr=2.0))
    assert bool((h1 <= h0 + 1e-9).all())
    h_through = ref_entropy(one_step(x, lambda l: losses.focal_entropic_loss(l, GAMMA, "through"), lr=2.0))
    up = h_through > h0
    assert bool(up.any()) and bool((h0[up] > 1 / (1 + GAMMA)).all())  # only pixels beyond the peak go up


def test_the_default_focal_term_is_the_authors_entropy_loss():
    """The authors' EntropyLoss (without its 0.001 weight, which is ``ent_weight`` x lr here):
    ``mean((1 - H)^5 * H)``, H = entropy / log C, autograd through all of it. The kit's default
    matches it in value and in gradient, and every profile's config defaults to it."""
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 11, 4, 6, generator=g) * 3
    ref_in = logits.double().clone().requires_grad_(True)
    p = ref_in.softmax(1)
    h = -(p * torch.log(p + 1e-30)).sum(1) / math.log(11)
    ref = (torch.pow(1 - h, 5) * h).mean()
    ref.backward()
    x = logits.clone().requires_grad_(True)
    loss = losses.focal_entropic_loss(x)            # the defaults: gamma 5, focal_grad "through"
    loss.backward()
    assert loss.item() == pytest.approx(ref.item(), abs=1e-6)
    assert torch.allclose(x.grad.double(), ref_in.grad, atol=1e-7)
    for profile in ("smoke", "quick", "full", "paper"):
        assert resolve(profile, "das3").focal_grad == "through"


def test_focal_grad_is_a_config_field_of_stage1():
    cfg = resolve("smoke", "das3")
    assert cfg.focal_grad == "through"
    k1 = stage_key(1, cfg)
    k2 = stage_key(1, dict(cfg, focal_grad="detached"))
    assert k1["config"]["focal_grad"] == "through" and k1 != k2
    # the cache names fit gives (the same source-only model under both)
    assert key_of("das3", cfg, 0, stage=1) != key_of("das3", dict(cfg, focal_grad="detached"), 0, stage=1)
    with pytest.raises(ValueError, match="focal_grad"):
        losses.focal_entropic_loss(torch.zeros(1, 3, 2, 2), 5.0, "weighted")


# ---------------------------------------------------------------------------------- EMA teacher
class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(self.conv(x))


def seeded_tiny(seed: int) -> Tiny:
    torch.manual_seed(seed)
    m = Tiny()
    with torch.no_grad():
        m.bn.running_mean.normal_()
        m.bn.running_var.uniform_(0.5, 2.0)
        m.bn.num_batches_tracked.fill_(seed + 3)
    return m


@pytest.mark.parametrize("it, alpha, expected", [(0, 0.999, 0.0), (1, 0.999, 0.5), (5, 0.999, 1 - 1 / 6),
                                                 (998, 0.999, 1 - 1 / 999), (999, 0.999, 0.999), (5000, 0.999, 0.999),
                                                 (20, 0.9, 0.9)])
def test_ema_rate(it, alpha, expected):
    assert ema_alpha_at(it, alpha) == pytest.approx(min(1 - 1 / (it + 1), alpha))
    assert ema_alpha_at(it, alpha) == pytest.approx(expected)


@pytest.mark.parametrize("it", [0, 5, 3000])
def test_ema_update_rule(it):
    teacher, student = seeded_tiny(0), seeded_tiny(1)
    t0 = {k: v.clone() for k, v in teacher.state_dict().items()}
    s0 = {k: v.clone() for k, v in student.state_dict().items()}
    a = ema_update(teacher, student, it, 0.999)
    assert a == pytest.approx(min(1 - 1 / (it + 1), 0.999))
    for k, v in teacher.state_dict().items():
        if v.is_floating_point():
            assert torch.allclose(v, a * t0[k] + (1 - a) * s0[k], atol=1e-6), k
        else:
            assert torch.equal(v, s0[k]), k
    for k, v in student.state_dict().items():          # the student is untouched
        assert torch.equal(v, s0[k])
    if it == 0:                                        # the first update makes the teacher the student
        for k, v in teacher.state_dict().items():
            assert torch.allclose(v.float(), s0[k].float())


def test_ema_update_checks():
    with pytest.raises(ValueError, match="alpha"):
        ema_alpha_at(3, 1.0)
    with pytest.raises(ValueError, match="different"):
        ema_update(Tiny(), nn.Conv2d(3, 4, 1), 3)


# ---------------------------------------------------------------------------------- labels and weights
def probs(seed: int, shape=(2, 5, 6, 7), scale=3.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * scale).softmax(1)


def test_dacs_weight_is_the_batch_share_of_confident_pixels():
    q = probs(2, scale=6.0)
    ref = float(sum(int(v >= 0.968) for v in q.max(1).values.flatten().tolist())) / q[:, 0].numel()
    assert 0 < ref < 1
    assert losses.confident_pixel_share(q, 0.968).item() == pytest.approx(ref)
    # one number for the batch, not per image: image 0 all confident, image 1 none -> 0.5 for both
    sure = torch.zeros(2, 3, 4, 4)
    sure[0, 0] = 1.0
    sure[1] = 1 / 3
    assert losses.confident_pixel_share(sure, 0.968).item() == pytest.approx(0.5)
    # the threshold is inclusive
    assert losses.confident_pixel_share(torch.tensor([0.968, 0.032]).view(1, 2, 1, 1), 0.968).item() == 1.0


def test_atp_labels_easy_argmax_and_weighted_mix():
    qe, qh = probs(3, scale=0.5), probs(4, scale=6.0)     # easy: unconfident on purpose (no threshold applies)
    g = torch.Generator().manual_seed(5)
    mask = torch.rand(2, 6, 7, generator=g) > 0.5
    y_easy, y_mix, w = das3_atp.atp_pseudo_labels(qe, qh, mask, 0.968)
    assert torch.equal(y_easy, qe.argmax(1))            # every pixel labelled: no 255
    assert qe.max(1).values.max() < 0.968 and not bool((y_easy == 255).any())
    assert torch.equal(y_mix[mask], qe.argmax(1)[mask]) and torch.equal(y_mix[~mask], qh.argmax(1)[~mask])
    share = float((qh.max(1).values >= 0.968).float().mean())
    assert torch.all(w[mask] == 1.0)
    assert torch.allclose(w[~mask], torch.full_like(w[~mask], share))


def test_pixel_weighted_seg_loss_reference():
    g = torch.Generator().manual_seed(6)
    logits = torch.randn(2, 4, 5, 5, generator=g)
    y = torch.randint(0, 4, (2, 5, 5), generator=g)
    y[0, 0] = 255
    w = torch.rand(2, 5, 5, generator=g)
    ce = -logits.log_softmax(1).gather(1, y.clamp_max(3)[:, None])[:, 0]
    valid = y != 255
    ref = (ce * w)[valid].sum() / valid.sum()
    assert losses.pixel_weighted_seg_loss(logits, y, w).item() == pytest.approx(ref.item(), abs=1e-6)
    assert losses.pixel_weighted_seg_loss(logits, y, torch.ones_like(w)).item() == pytest.approx(
        losses.seg_loss(logits, y).item(), abs=1e-6)


# ---------------------------------------------------------------------------------- easy/hard split
class FixedSegmenter(nn.Module):
    """A 1x1 conv 'segmenter' with seeded weights: its predictions differ from image to image."""

    num_classes = 5

    def __init__(self):
        super().__init__()
        torch.manual_seed(7)
        self.conv = nn.Conv2d(3, 5, 1)
        nn.init.normal_(self.conv.weight, std=4.0)

    def forward(self, x):
        return {"out": self.conv(x)}


def test_easy_hard_split_by_mean_normalized_entropy():
    target = ToyWorld("real", "train", (32, 64), 20)
    model = FixedSegmenter()
    # the reference is fp32: pin the scan to fp32 (amp="auto" is bf16 on a CPU with native bf16)
    scan = das3_scan.scan_target(model, target, batch_size=8, scan_pixels=16, amp="off")
    with torch.no_grad():
        ref = torch.stack([ref_entropy(model(target[i][0][None])["out"]).mean() for i in range(20)]).float()
    assert torch.allclose(scan.entropy, ref, atol=1e-5)
    easy, hard = scan.split(0.3)
    ref_order = sorted(range(20), key=lambda i: ref[i].item())
    assert len(easy) == 6 and sorted(easy) == sorted(ref_order[:6]) and sorted(hard) == sorted(ref_order[6:])


# ---------------------------------------------------------------------------------- the ATP stage 3
@pytest.fixture(scope="module")
def tiny():
    cfg = resolve("smoke", "das3", batch_size=4, stage3_iters=3, device="cpu", n_train=16, n_val=8, stage3="atp")
    torch.manual_seed(0)
    return cfg, build_model(cfg, 11), ToyWorld("real", "train", tuple(cfg.size), 16)


def test_stage3_atp_runs_with_an_ema_teacher(tiny):
    cfg, model, target = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = das3.stage3_propagate(model, target, cfg, seed=0)
    assert res.info["variant"] == "atp" and "thresholds" not in res.info
    assert res.info["ema_alpha_last"] == pytest.approx(1 - 1 / 3)       # the last of 3 steps: t = 2
    assert set(res.history.train[-1]) >= {"easy", "mix", "hard_weight"}
    teacher = res.teacher
    assert not teacher.training and all(not p.requires_grad for p in teacher.parameters())
    # the teacher moved away from the stage-2 model (EMA of the student), the input model did not
    assert any(not torch.equal(v.cpu(), before[k]) for k, v in teacher.state_dict().items() if v.is_floating_point())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    easy, hard = res.info["easy"], res.info["hard"]
    assert len(easy) == round(0.3 * 16) and sorted(easy + hard) == list(range(16))


def test_stage3_atp_first_step_teacher_is_the_stage2_model(tiny):
    cfg, model, target = tiny
    res = das3_atp.stage3_atp(model, target, dict(cfg, stage3_iters=1), seed=0)
    for (k, v), p in zip(model.named_parameters(), res.teacher.parameters()):
        assert torch.equal(v, p.cpu()), k


def test_stage3_variant_fields_and_keys(tiny):
    cfg, _, _ = tiny
    kit = dict(cfg, stage3="kit")
    assert resolve("smoke", "das3").stage3 == "kit"
    k_kit, k_atp = stage_key(3, kit, "s2"), stage_key(3, cfg, "s2")
    assert k_kit != k_atp and "ema_alpha" in k_atp["config"] and "ema_alpha" not in k_kit["config"]
    assert stage_key(3, dict(kit, ema_alpha=0.99), "s2") == k_kit     # ATP fields do not touch the kit key
    # the same for the cache names fit gives (the whole chain from the source-only model)
    assert key_of("das3", kit, 0, stage=3) != key_of("das3", cfg, 0, stage=3)
    assert key_of("das3", dict(kit, ema_alpha=0.99), 0, stage=3) == key_of("das3", kit, 0, stage=3)
    paper = resolve("paper", "das3")
    assert paper.atp_optimizer == "adamw" and paper.atp_lr == pytest.approx(6e-5) and paper.ema_alpha == 0.999
    assert paper.atp_conf_threshold == pytest.approx(0.968) and paper.easy_ratio == pytest.approx(0.3)
    with pytest.raises(ValueError, match="stage3"):
        das3.stage3_propagate(build_model(cfg, 11), ToyWorld("real", "train", tuple(cfg.size), 16),
                              dict(cfg, stage3="dacs"))


def test_atp_optimizer_at_paper_scale(tiny):
    cfg, model, _ = tiny
    opt = das3_atp._atp_optimizer(dict(cfg, atp_optimizer="adamw", atp_lr=6e-5, head_lr_mult=10.0), model)
    assert isinstance(opt, torch.optim.AdamW)
    lrs = sorted({g["lr"] for g in opt.param_groups})
    assert lrs[0] == pytest.approx(6e-5) and lrs[-1] == pytest.approx(6e-4)
    assert all(g["weight_decay"] == pytest.approx(0.01) for g in opt.param_groups)
    # default: the config's optimizer at stage3_lr
    opt = das3_atp._atp_optimizer(cfg, model)
    assert type(opt).__name__.lower() == cfg["optimizer"] and min(g["lr"] for g in opt.param_groups) == pytest.approx(cfg["stage3_lr"])


def test_strong_augment_probabilities_and_range():
    x = torch.rand(3, 3, 20, 24, generator=torch.Generator().manual_seed(8))
    assert torch.equal(strong_augment(x, torch.Generator().manual_seed(0), jitter_prob=0.0, blur_prob=0.0), x)
    y = strong_augment(x, torch.Generator().manual_seed(0), jitter_prob=1.0, blur_prob=1.0)
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1 and not torch.equal(y, x)
    blurred = strong_augment(x, torch.Generator().manual_seed(0), jitter_prob=0.0, blur_prob=1.0)
    assert blurred.std() < x.std()                        # a blur smooths
    with pytest.raises(ValueError, match="jitter"):
        strong_augment(x, jitter=1.5)


def test_atp_thresholded_labels_deviation():
    """atp_labels="thresholded": stage 2's class-wise rule replaces the argmax; the weight is the same."""
    qe, qh = probs(3, scale=0.5), probs(4, scale=6.0)
    mask = torch.rand(2, 6, 7, generator=torch.Generator().manual_seed(5)) > 0.5
    thr = torch.full((qe.shape[1],), 0.9)
    _, _, w_arg = das3_atp.atp_pseudo_labels(qe, qh, mask, 0.968)
    y_easy, y_mix, w = das3_atp.atp_pseudo_labels(qe, qh, mask, 0.968, thresholds=thr)
    assert torch.equal(y_easy, losses.positive_pseudo_labels(qe, thr))
    assert bool((y_easy == 255).all())                      # the easy images are unconfident: all ignored
    yh = losses.positive_pseudo_labels(qh, thr)
    assert torch.equal(y_mix[~mask], yh[~mask]) and torch.equal(w, w_arg)


@pytest.mark.parametrize("labels, teacher", [("thresholded", "ema"), ("argmax", "frozen")])
def test_stage3_atp_deviations(tiny, labels, teacher):
    cfg, model, target = tiny
    res = das3_atp.stage3_atp(model, target, dict(cfg, atp_labels=labels, atp_teacher=teacher), seed=0)
    assert res.info["labels"] == labels and res.info["teacher"] == teacher
    assert ("thresholds" in res.info) == (labels == "thresholded")
    frozen_same = all(torch.equal(v, p.cpu()) for (_, v), p in zip(model.named_parameters(), res.teacher.parameters()))
    assert frozen_same == (teacher == "frozen")             # a frozen teacher is the stage-2 model throughout
    deviation = dict(cfg, atp_teacher=teacher, atp_labels=labels)
    assert key_of("das3", deviation, 0, stage=3) != key_of("das3", cfg, 0, stage=3)
    with pytest.raises(ValueError, match="atp_labels"):
        das3_atp.stage3_atp(model, target, dict(cfg, atp_labels="soft"), seed=0)


def test_the_authors_diversity_term_is_the_named_option_pixels():
    """The authors' code (yxiwang/ATP, EntropyLoss, ``gent``): weights ``exp(-3 H)`` detached,
    ``m_c = sum_i w_i p_ic / N`` over the N pixels, loss ``sum_c m_c log m_c / log C``. The kit's
    ``norm="pixels"`` matches it in value and gradient; the default (``"weights"``) is the
    normalized mean ``m / mean(w)``, whose gradient is the authors' times ``log C / mean(w)``."""
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 11, 4, 6, generator=g) * 2
    x = logits.double().clone().requires_grad_(True)
    p = x.softmax(1)
    h = -(p * torch.log(p + 1e-30)).sum(1) / math.log(11)
    w = torch.exp(-3 * h).detach()
    m = (p * w[:, None]).sum((0, 2, 3)) / w.numel()
    ref = (m * torch.log(m + 1e-30)).sum() / math.log(11)
    ref.backward()
    y = logits.clone().requires_grad_(True)
    got = losses.weighted_diversity_loss(y, 3.0, norm="pixels")
    got.backward()
    assert got.item() == pytest.approx(ref.item(), abs=1e-6)
    assert torch.allclose(y.grad.double(), x.grad, atol=1e-7)
    z = logits.clone().requires_grad_(True)
    losses.weighted_diversity_loss(z, 3.0).backward()
    assert torch.allclose(z.grad.double() * w.mean() / math.log(11), x.grad, atol=1e-7)
    assert resolve("smoke", "das3").diversity_norm == "weights"
    with pytest.raises(ValueError, match="diversity norm"):
        losses.weighted_diversity_loss(logits, 3.0, norm="batch")
