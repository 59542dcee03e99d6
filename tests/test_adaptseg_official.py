"""AdaptSegNet's official semantics, stated in this file's own code and checked against the kit.

BatchNorm in the official training script: the BN layers' affine parameters get
``requires_grad = False``, but the network is put in train mode and never switched back,
so during adaptation every BN layer (i) normalizes with the mean and biased variance of the
current batch, (ii) updates its running statistics with momentum 0.1, (iii) does not change
its weight and bias; evaluation then uses the running statistics. The kit calls this
``frozen_bn="affine"`` (the paper profile's default for AdaptSegNet) and keeps DeepLab-v2's
eval-mode frozen BN as ``frozen_bn=True`` (the toy profiles' G).
"""
import pytest
import torch
import torch.nn as nn

from kit.config import resolve
from kit.methods import adaptseg
from kit.models import DeepLabV2


def _bns(model):
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


def _reference_bn(x, bn):
    """Train-mode BN by hand: batch mean, biased batch variance, the layer's (frozen) affine."""
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + bn.eps) * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1)


def test_affine_mode_uses_batch_statistics_and_updates_running_ones():
    torch.manual_seed(0)
    model = DeepLabV2(5, depth=10, width=8, frozen_bn="affine").train()
    bns = _bns(model)
    assert bns and all(bn.training for bn in bns)                      # train mode kept
    assert all(not p.requires_grad for bn in bns for p in bn.parameters())   # affine frozen
    with torch.no_grad():
        for bn in bns:                                                  # non-trivial affine and stats
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
    # (i) the stem BN normalizes with the current batch's statistics
    x = torch.rand(3, 3, 32, 64)
    stem_in = model.backbone.conv1(model.norm(x))
    got = model.backbone.bn1(stem_in)
    torch.testing.assert_close(got, _reference_bn(stem_in, model.backbone.bn1), rtol=1e-4, atol=1e-4)
    # (ii) running statistics move towards the batch's: r <- 0.9 r + 0.1 batch (unbiased var)
    bn = model.backbone.bn1
    before_mean, before_var = bn.running_mean.clone(), bn.running_var.clone()
    bn(stem_in)
    batch_mean = stem_in.mean(dim=(0, 2, 3))
    batch_var = stem_in.var(dim=(0, 2, 3), unbiased=True)
    torch.testing.assert_close(bn.running_mean, 0.9 * before_mean + 0.1 * batch_mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bn.running_var, 0.9 * before_var + 0.1 * batch_var, rtol=1e-4, atol=1e-5)
    # (iii) a training step leaves the affine parameters alone but moves the convs
    w0 = {id(b): (b.weight.clone(), b.bias.clone()) for b in bns}
    conv0 = model.backbone.conv1.weight.clone()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(x)["out"].square().mean().backward()
    opt.step()
    assert all(torch.equal(b.weight, w0[id(b)][0]) and torch.equal(b.bias, w0[id(b)][1]) for b in bns)
    assert not torch.equal(model.backbone.conv1.weight, conv0)
    # evaluation uses the running statistics
    model.eval()
    assert not any(b.training for b in bns)


def test_eval_mode_frozen_bn_is_the_other_named_option():
    torch.manual_seed(0)
    model = DeepLabV2(5, depth=10, width=8, frozen_bn=True).train()
    bns = _bns(model)
    assert all(not b.training for b in bns)                         # eval mode even under .train()
    before = [b.running_mean.clone() for b in bns]
    model(torch.rand(2, 3, 32, 64))
    assert all(torch.equal(b.running_mean, m) for b, m in zip(bns, before))   # statistics fixed


def test_profiles_name_the_regime():
    paper = resolve("paper", "adaptseg")
    assert paper["frozen_bn"] == "affine" and paper["bn_frozen"] == "affine"     # the official behaviour
    g = adaptseg._g_config(paper)
    assert g["frozen_bn"] == "affine"
    quick = resolve("quick", "adaptseg")
    assert quick["bn_frozen"] is True and adaptseg._g_config(quick)["frozen_bn"] is True   # named deviation
    assert resolve("quick", "adaptseg", bn_frozen="affine")["bn_frozen"] == "affine"   # papermill -p string
    with pytest.raises(ValueError, match="False, True or 'affine'"):
        resolve("quick", "adaptseg", bn_frozen="sometimes")
    with pytest.raises(ValueError, match="affine"):
        DeepLabV2(5, depth=10, width=8, frozen_bn="yes")
