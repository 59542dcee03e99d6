"""Unit tests of kit.models (CPU, tiny widths and resolutions)."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn as nn

from kit.models import (ASPPClassifier, DeepLabV2, DSBatchNorm2d, FCDiscriminator, PSPNet, UNet,
                        build_segmenter, convert_to_dsbn, count_flops, count_parameters, freeze,
                        load_pretrained, resnet, set_domain, upsample_like, use_domain)
from kit.models.utils import InputNorm


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def ceil_div_chain(n: int, halvings: int) -> int:
    for _ in range(halvings):
        n = math.ceil(n / 2)
    return n


def tiny_deeplab(**kw):
    kw.setdefault("depth", 10)
    kw.setdefault("width", 8)
    return DeepLabV2(5, **kw)


# ---------------------------------------------------------------- ResNet

RESNET18_KEYS = [
    "conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
    "bn1.num_batches_tracked", "layer1.0.conv1.weight", "layer1.0.bn2.bias",
    "layer1.1.conv2.weight", "layer2.0.downsample.0.weight", "layer2.0.downsample.1.running_var",
    "layer3.1.bn1.running_mean", "layer4.0.downsample.1.weight", "layer4.1.conv2.weight",
    "fc.weight", "fc.bias",
]
RESNET101_KEYS = [
    "conv1.weight", "layer1.0.conv3.weight", "layer1.0.downsample.0.weight",
    "layer1.0.downsample.1.running_var", "layer2.3.bn3.num_batches_tracked",
    "layer3.22.conv2.weight", "layer3.0.downsample.1.bias", "layer4.2.conv3.weight",
    "layer4.2.bn3.running_var", "fc.weight",
]


def test_resnet_torchvision_names_and_parameter_counts():
    r18 = resnet(18, num_classes=1000)
    sd = r18.state_dict()
    assert all(k in sd for k in RESNET18_KEYS)
    assert "layer1.0.downsample.0.weight" not in sd  # BasicBlock layer1 has no projection
    assert len(sd) == 122
    assert count_parameters(r18) == 11_689_512
    r101 = resnet(101, num_classes=1000)
    sd = r101.state_dict()
    assert all(k in sd for k in RESNET101_KEYS)
    assert "layer3.23.conv1.weight" not in sd
    assert count_parameters(r101) == 44_549_160
    assert r101.channels == {"stem": 64, "layer1": 256, "layer2": 512, "layer3": 1024, "layer4": 2048}


@pytest.mark.parametrize("os_", [8, 16, 32])
@pytest.mark.parametrize("depth", [10, 50])
def test_resnet_output_strides(os_, depth):
    m = resnet(depth, width=8, output_stride=os_).eval()
    for h, w in [(64, 64), (65, 129)]:
        f = m.forward_features(torch.rand(1, 3, h, w))
        halvings = {"layer1": 2, "layer2": 3, "layer3": min(4, int(math.log2(os_))),
                    "layer4": int(math.log2(os_))}
        for name, n in halvings.items():
            assert f[name].shape == (1, m.channels[name], ceil_div_chain(h, n), ceil_div_chain(w, n))
    e = 4 if depth == 50 else 1
    assert m.channels["layer4"] == 8 * 8 * e
    # dilation only changes strides, never the parameter shapes
    assert {k: v.shape for k, v in m.state_dict().items()} == \
        {k: v.shape for k, v in resnet(depth, width=8).state_dict().items()}


def test_resnet_dilations_deeplab_v2():
    m = resnet(50, width=8, output_stride=8)
    assert m.layer3[0].conv2.dilation == (2, 2) and m.layer3[0].conv2.stride == (1, 1)
    assert m.layer4[2].conv2.dilation == (4, 4)
    assert m.layer2[0].conv2.stride == (2, 2)


def test_resnet_frozen_bn():
    m = resnet(10, width=8, frozen_bn=True)
    m.train()
    bns = [x for x in m.modules() if isinstance(x, nn.BatchNorm2d)]
    assert all(not b.training for b in bns)
    assert all(not p.requires_grad for b in bns for p in b.parameters())
    before = m.bn1.running_mean.clone()
    m(torch.rand(2, 3, 32, 32))
    assert torch.equal(before, m.bn1.running_mean)


def test_load_pretrained_round_trip_and_errors(tmp_path):
    src = resnet(18, width=8, num_classes=10)
    path = tmp_path / "r18.pth"
    torch.save(src.state_dict(), path)
    dst = resnet(18, width=8, pretrained=path)  # no fc: fc.* ignored
    for k, v in dst.state_dict().items():
        assert torch.equal(v, src.state_dict()[k]), k

    with pytest.raises(ValueError, match=r"shape mismatch.*conv1.weight"):
        resnet(18, width=16, pretrained=path)
    with pytest.raises(ValueError, match="unexpected keys"):
        load_pretrained(resnet(10, width=8), path)
    sd = src.state_dict()
    del sd["layer4.1.conv2.weight"]
    torch.save(sd, tmp_path / "missing.pth")
    with pytest.raises(ValueError, match=r"missing keys: layer4\.1\.conv2\.weight"):
        load_pretrained(resnet(18, width=8), tmp_path / "missing.pth")
    data = path.read_bytes()
    (tmp_path / "trunc.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated"):
        load_pretrained(resnet(18, width=8), tmp_path / "trunc.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="state_dict"):
        load_pretrained(resnet(18, width=8), tmp_path / "list.pth")
    with pytest.raises(FileNotFoundError):
        load_pretrained(resnet(18, width=8), tmp_path / "nope.pth")


def test_resnet_bad_arguments():
    with pytest.raises(ValueError, match="depth"):
        resnet(42)
    with pytest.raises(ValueError, match="output_stride"):
        resnet(10, output_stride=4)
    m = resnet(10, width=8)
    with pytest.raises(ValueError, match="4-D"):
        m(torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match="3 input channels"):
        m(torch.rand(1, 1, 32, 32))
    with pytest.raises(TypeError):
        m([1, 2])
    with pytest.raises(ValueError, match="at least 32x32"):
        m(torch.rand(1, 3, 16, 64))


# ---------------------------------------------------------------- DeepLab-v2

def test_aspp_official_bug_sums_two_branches():
    x = torch.randn(1, 16, 9, 9)
    correct = ASPPClassifier(16, 4)
    official = ASPPClassifier(16, 4, official=True)
    official.load_state_dict(correct.state_dict())  # same four convs
    c = correct.convs
    assert torch.allclose(correct(x), c[0](x) + c[1](x) + c[2](x) + c[3](x), atol=1e-6)
    assert torch.allclose(official(x), c[0](x) + c[1](x), atol=1e-6)
    assert not torch.allclose(official(x), correct(x))
    assert [m.dilation[0] for m in c] == [6, 12, 18, 24]
    assert all(m.bias is not None for m in c)
    assert abs(c[0].weight.std().item() - 0.01) < 0.002


@pytest.mark.parametrize("os_", [8, 16, 32])
def test_deeplab_outputs(os_):
    m = tiny_deeplab(output_stride=os_, multi_level=True).eval()
    out = m(torch.rand(2, 3, 65, 129))
    assert set(out) == {"out", "aux", "feat"}
    n = int(math.log2(os_))
    assert out["out"].shape == (2, 5, ceil_div_chain(65, n), ceil_div_chain(129, n))
    assert out["aux"].shape == (2, 5, ceil_div_chain(65, min(n, 4)), ceil_div_chain(129, min(n, 4)))
    assert out["feat"].shape[1] == m.backbone.channels["layer4"]
    assert upsample_like(out["out"], (65, 129)).shape == (2, 5, 65, 129)
    single = tiny_deeplab(output_stride=os_)
    assert set(single(torch.rand(1, 3, 64, 64))) == {"out", "feat"}
    assert single.aux_head is None


def test_input_norm_modes():
    x = torch.rand(1, 3, 4, 4)
    caffe = InputNorm("caffe")(x)
    expected = x.flip(1) * 255 - torch.tensor([104.008, 116.669, 122.675]).view(1, 3, 1, 1)
    assert torch.allclose(caffe, expected, atol=1e-4)
    im = InputNorm("imagenet")(x)
    assert torch.allclose(im[:, 0], (x[:, 0] - 0.485) / 0.229)
    assert torch.equal(InputNorm(None)(x), x)
    with pytest.raises(ValueError, match="input_norm"):
        InputNorm("bgr")
    assert "norm.mean" not in tiny_deeplab().state_dict()  # buffers stay out of checkpoints


def test_deeplab_frozen_bn_param_groups():
    m = tiny_deeplab(multi_level=True, frozen_bn=True)
    groups = m.param_groups()
    assert [g["name"] for g in groups] == ["backbone", "head"]
    assert [g["lr_mult"] for g in groups] == [1.0, 10.0]
    _assert_cover(m, groups)
    bn_ids = {id(p) for mod in m.modules() if isinstance(mod, nn.BatchNorm2d) for p in mod.parameters()}
    assert not bn_ids & {id(p) for g in groups for p in g["params"]}


def _assert_cover(model, groups):
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)), "a parameter is in two groups"
    assert set(ids) == {id(p) for p in model.parameters() if p.requires_grad}


# ---------------------------------------------------------------- discriminator

def test_discriminator():
    d = FCDiscriminator(5, width=8)
    assert d(torch.rand(2, 5, 64, 128)).shape == (2, 1, 2, 4)
    assert d(torch.rand(1, 5, 65, 129)).shape == (1, 1, 2, 4)
    assert d(torch.rand(1, 5, 32, 32)).shape == (1, 1, 1, 1)
    norm_types = (nn.BatchNorm2d, nn.InstanceNorm2d, nn.GroupNorm, nn.LayerNorm)
    assert not any(isinstance(m, norm_types) for m in d.modules())
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 16, 32, 64, 1]
    assert all(c.kernel_size == (4, 4) and c.stride == (2, 2) and c.padding == (1, 1) for c in convs)
    assert sum(isinstance(m, nn.Sigmoid) for m in d.modules()) == 0
    assert count_parameters(FCDiscriminator(19)) == sum(  # paper widths 64..512
        cin * cout * 16 + cout for cin, cout in [(19, 64), (64, 128), (128, 256), (256, 512), (512, 1)])
    with pytest.raises(ValueError, match="at least 32x32"):
        d(torch.rand(1, 5, 16, 64))
    with pytest.raises(ValueError, match="5 input channels"):
        d(torch.rand(1, 3, 64, 64))


# ---------------------------------------------------------------- PSPNet

def test_pspnet_multi_head():
    m = PSPNet([4, 7], depth=10, width=8, aux=True)
    x = torch.rand(2, 3, 64, 96)
    o0, o1 = m(x), m(x, head=1)
    assert o0["out"].shape == (2, 4, 8, 12) and o1["out"].shape == (2, 7, 8, 12)
    assert o0["aux"].shape == (2, 4, 8, 12) and o1["aux"].shape == (2, 7, 8, 12)
    assert isinstance(m.classifier, nn.ModuleList) and len(m.classifier) == 2
    assert m.ppm.out_channels == 2 * m.backbone.channels["layer4"]
    with pytest.raises(ValueError, match="head"):
        m(x, head=2)
    with pytest.raises(ValueError, match="batch"):
        m(x[:1])
    _assert_cover(m, m.param_groups())
    single = PSPNet(5, depth=10, width=8, output_stride=16).eval()
    assert single(torch.rand(1, 3, 65, 129))["out"].shape == (1, 5, 5, 9)
    assert isinstance(single.classifier, nn.Conv2d)


# ---------------------------------------------------------------- DSBN (CDCL)

def test_dsbn_routing_updates_only_selected_branch():
    bn = DSBatchNorm2d(4, 3)
    bn.train()
    before = [copy.deepcopy(b.state_dict()) for b in bn.bns]
    bn.domain = 1
    bn(torch.randn(2, 4, 5, 5) * 3 + 1)
    after = [b.state_dict() for b in bn.bns]
    for i in (0, 2):
        for k in before[i]:
            assert torch.equal(before[i][k], after[i][k])
    assert not torch.equal(before[1]["running_mean"], after[1]["running_mean"])
    assert after[1]["num_batches_tracked"].item() == 1
    with pytest.raises(ValueError, match="out of range"):
        bn.domain = 3


@pytest.mark.parametrize("train", [False, True])
def test_convert_to_dsbn_preserves_outputs(train):
    ref = PSPNet([3, 4], depth=10, width=8)
    ref.train()  # move running stats away from their init
    ref(torch.rand(2, 3, 48, 48))
    for m in ref.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
    m = convert_to_dsbn(copy.deepcopy(ref), 2)
    in_dsbn = {id(b) for d in m.modules() if isinstance(d, DSBatchNorm2d) for b in d.bns}
    bns = [b for b in m.modules() if isinstance(b, nn.BatchNorm2d)]
    assert bns and all(id(b) in in_dsbn for b in bns)  # every BN now sits inside a DSBN
    ref.train(train)
    m.train(train)
    for mod in (ref, m):  # dropout off, BN mode as requested
        for d in mod.modules():
            if isinstance(d, nn.Dropout2d):
                d.eval()
    x = torch.rand(2, 3, 48, 48)
    expected = ref(x, head=1)["out"]
    for dom in (0, 1):
        with use_domain(m, dom):
            assert torch.allclose(m(x, head=1)["out"], expected, atol=1e-5)
    assert max(d.domain for d in m.modules() if isinstance(d, DSBatchNorm2d)) == 0  # restored
    set_domain(m, 1)
    assert all(d.domain == 1 for d in m.modules() if isinstance(d, DSBatchNorm2d))
    with pytest.raises(ValueError, match="out of range"):
        set_domain(m, 5)
    with pytest.raises(ValueError, match="convert_to_dsbn"):
        set_domain(nn.Conv2d(1, 1, 1), 0)
    _assert_cover(m, m.param_groups())


# ---------------------------------------------------------------- U-Net (DeP/DDeP)

@pytest.mark.parametrize("layers", [0, 1])
def test_unet_full_resolution_and_replace_head(layers):
    m = UNet(3, depth=10, width=8, transformer_layers=layers, transformer_heads=2)
    out = m(torch.rand(2, 3, 65, 129))
    assert out["out"].shape == (2, 3, 65, 129)
    assert out["feat"].shape == (2, 64, 3, 5)
    body = {k: v.clone() for k, v in m.state_dict().items() if not k.startswith("head.")}
    new = m.replace_head(6)
    assert new is m.head and m.head.out_channels == 6
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in body.items())
    assert m(torch.rand(2, 3, 64, 64))["out"].shape == (2, 6, 64, 64)
    groups = m.param_groups()
    _assert_cover(m, groups)
    assert any(p is m.head.weight for g in groups if g["name"] == "head" for p in g["params"])
    freeze(m.encoder)
    groups = m.param_groups()
    assert [g["name"] for g in groups] == ["head"]  # frozen encoder: empty group dropped
    _assert_cover(m, groups)


# ---------------------------------------------------------------- shared behaviour

def _tiny(name):
    if name == "deeplabv2":
        return build_segmenter(name, 4, depth=10, width=8, multi_level=True)
    if name == "pspnet":
        return build_segmenter(name, 4, depth=10, width=8, aux=True)
    return build_segmenter(name, 4, depth=10, width=8, transformer_layers=1, transformer_heads=2)


@pytest.mark.parametrize("name", ["deeplabv2", "pspnet", "unet"])
def test_bf16_autocast_channels_last(name):
    m = _tiny(name).to(memory_format=torch.channels_last)
    x = torch.rand(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(x)
        loss = sum(v.float().mean() for k, v in out.items() if k != "feat")
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(v).all() for v in out.values())


@pytest.mark.parametrize("name", ["deeplabv2", "pspnet", "unet"])
def test_segmenters_param_groups_and_input_errors(name):
    m = _tiny(name)
    groups = m.param_groups()
    assert [(g["name"], g["lr_mult"]) for g in groups] == [("backbone", 1.0), ("head", 10.0)]
    _assert_cover(m, groups)
    with pytest.raises(ValueError, match="4-D"):
        m(torch.rand(3, 64, 64))
    with pytest.raises(ValueError, match="3 input channels"):
        m(torch.rand(2, 4, 64, 64))
    with pytest.raises(ValueError, match="at least"):
        m(torch.rand(2, 3, 4, 4))


def test_build_segmenter_unknown_name():
    with pytest.raises(ValueError, match="deeplabv2.*pspnet.*unet"):
        build_segmenter("segformer", 19)


def test_count_flops_and_upsample():
    conv = nn.Conv2d(3, 8, 3, padding=1)
    assert count_flops(conv, (1, 3, 10, 10)) == 8 * 10 * 10 * 3 * 9
    lin = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
    assert count_flops(lin, (2, 3, 2, 2)) == 2 * 5 * 12
    assert count_flops(resnet(18, num_classes=1000), (1, 3, 224, 224)) == pytest.approx(1.814e9, rel=1e-3)
    logits = torch.randn(1, 2, 4, 4)
    assert upsample_like(logits, torch.zeros(1, 9, 7)).shape == (1, 2, 9, 7)
    with pytest.raises(ValueError):
        upsample_like(torch.randn(2, 4, 4), (8, 8))
