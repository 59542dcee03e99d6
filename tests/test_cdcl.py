"""CDCL (Wang et al., 2021): dataset-specific BN, DAT, label remapping, the paper profile on CPU."""
import contextlib
import types

import pytest
import torch
import torch.nn as nn

from kit.config import resolve
from kit.data import make_cdcl_datasets
from kit.data.world_spec import DOMAINS, WORLD_CLASSES
from kit.fit import fit, key_of
from kit.losses import seg_loss
from kit.methods import cdcl
from kit.methods.cdcl_analysis import distribution_distance
from kit.methods.cdcl_remap import LabelRemap, label_remap_for, label_remap_loss
from kit.models import DSBatchNorm2d, PSPNet, convert_to_dsbn, count_flops, count_parameters, use_domain


def _tiny(heads=(11, 11), dsbn=True, dropout=0.0):
    torch.manual_seed(0)
    m = PSPNet(list(heads), depth=10, width=8, output_stride=8, dropout=dropout)
    return convert_to_dsbn(m, len(heads)) if dsbn else m


def _fake_engine(model, opt, it=0):
    return types.SimpleNamespace(modules={"model": model}, optimizers={"model": opt}, it=it,
                                 autocast=contextlib.nullcontext)


def test_dsbn_updates_only_the_selected_branch():
    torch.manual_seed(0)
    bn = DSBatchNorm2d(4, num_domains=3)
    bn.train()
    x = torch.randn(6, 4, 5, 5) * 3 + 2
    before = [(b.running_mean.clone(), b.running_var.clone()) for b in bn.bns]
    bn.domain = 1
    bn(x)
    for d in (0, 2):
        assert torch.equal(bn.bns[d].running_mean, before[d][0])
        assert torch.equal(bn.bns[d].running_var, before[d][1])
        assert int(bn.bns[d].num_batches_tracked) == 0
    expected = 0.1 * x.mean(dim=(0, 2, 3))
    assert torch.allclose(bn.bns[1].running_mean, expected, atol=1e-5)
    with pytest.raises(ValueError, match="out of range"):
        bn.domain = 3


def test_dat_step_routes_each_dataset_to_its_own_bn_statistics():
    model = _tiny()
    model.train()
    xa, xb = torch.rand(2, 3, 32, 64) * 0.3, torch.rand(2, 3, 32, 64) * 0.3 + 0.7  # dark A, bright B
    y = torch.randint(0, 11, (2, 32, 64))
    bn1 = model.backbone.bn1 if hasattr(model.backbone, "bn1") else next(
        m for m in model.modules() if isinstance(m, DSBatchNorm2d))
    conv1 = next(m for m in model.backbone.modules() if isinstance(m, nn.Conv2d))
    with torch.no_grad():
        ea = 0.1 * conv1(model.norm(xa)).mean(dim=(0, 2, 3))
        eb = 0.1 * conv1(model.norm(xb)).mean(dim=(0, 2, 3))
    step = cdcl.DATStep([cdcl.Route("a", 0, 0), cdcl.Route("b", 1, 1)])
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    step({"a": (xa, y), "b": (xb, y)}, _fake_engine(model, opt))
    assert torch.allclose(bn1.bns[0].running_mean, ea, atol=1e-5)
    assert torch.allclose(bn1.bns[1].running_mean, eb, atol=1e-5)
    # with interval t = 2 at an odd iteration only dataset 0 trains: branch 1 is untouched
    before = bn1.bns[1].running_mean.clone()
    cdcl.DATStep([cdcl.Route("a", 0, 0), cdcl.Route("b", 1, 1)], interval=2)(
        {"a": (xa, y), "b": (xb, y)}, _fake_engine(model, opt, it=1))
    assert torch.equal(bn1.bns[1].running_mean, before)


def test_conversion_preserves_outputs_in_every_branch():
    model = _tiny(dsbn=False)
    torch.manual_seed(1)
    for m in model.modules():  # non-trivial statistics and affine parameters
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    x = torch.rand(3, 3, 32, 64)
    model.eval()
    ref = [model(x, head=h)["out"] for h in (0, 1)]
    convert_to_dsbn(model, 3)
    assert not any(type(m) is nn.BatchNorm2d for n, m in model.named_modules() if ".bns." not in n)
    for d in range(3):
        with use_domain(model, d):
            for h in (0, 1):
                assert torch.allclose(model(x, head=h)["out"], ref[h], atol=1e-6)


def test_dat_one_step_equals_the_sum_of_per_dataset_gradients():
    model = _tiny(heads=(11, 8))
    model.train()
    torch.manual_seed(2)
    xa, xb = torch.rand(2, 3, 32, 64), torch.rand(2, 3, 32, 64)
    ya, yb = torch.randint(0, 11, (2, 32, 64)), torch.randint(0, 8, (2, 32, 64))
    ya[:, :4] = 255
    w = (1.0, 0.5)
    routes = [cdcl.Route("a", 0, 0), cdcl.Route("b", 1, 1)]
    params = dict(model.named_parameters())
    grad_sum = {k: torch.zeros_like(p) for k, p in params.items()}
    for r, (x, y), wi in zip(routes, [(xa, ya), (xb, yb)], w):
        model.zero_grad()
        with use_domain(model, r.domain):
            loss = wi * seg_loss(model(x, head=r.head)["out"], y)
        loss.backward()
        for k, p in params.items():
            if p.grad is not None:
                grad_sum[k] += p.grad
    before = {k: p.detach().clone() for k, p in params.items()}
    lr = 0.5
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    logs = cdcl.DATStep(routes, weights=w)({"a": (xa, ya), "b": (xb, yb)}, _fake_engine(model, opt))
    assert set(logs) == {"seg_a", "seg_b", "total"}
    for k, p in params.items():
        assert torch.allclose(before[k] - p.detach(), lr * grad_sum[k], atol=1e-5), k
    # dataset-specific parameters: the other dataset's head got no gradient from dataset a
    assert grad_sum["classifier.1.weight"].abs().sum() > 0


def test_label_remapping_maps_every_class_exactly_once():
    names = ["city_a", "city_b", "city_c"]
    remap = LabelRemap.from_domains(names)
    assert remap.union == tuple(WORLD_CLASSES)
    for i, n in enumerate(names):
        m = remap.membership(i)
        assert m.shape == (DOMAINS[n].num_classes, len(remap.union))
        assert torch.equal(m.sum(0), torch.ones(len(remap.union)))   # each union class in exactly one class
        assert bool((m.sum(1) >= 1).all())                           # each dataset class covers >= 1
        assert torch.equal(remap.lut(i), DOMAINS[n].label_lut())     # agrees with the world's label map
    assert torch.equal(remap.membership(0), torch.eye(11))
    assert remap.membership(2).sum() == 11 and remap.membership(2).shape[0] == 8
    with pytest.raises(ValueError, match="in both"):
        LabelRemap(("a", "b"), (("x", "y"),), ({"x": ("a", "b"), "y": ("b",)},))
    with pytest.raises(ValueError, match="not in the union"):
        LabelRemap(("a",), (("x",),), ({"x": ("z",)},))


def test_label_remap_loss_identity_equals_cross_entropy_and_merges_probabilities():
    torch.manual_seed(3)
    logits = torch.randn(2, 5, 4, 8)
    y = torch.randint(0, 5, (2, 8, 16))
    y[0, 0] = 255
    assert torch.allclose(label_remap_loss(logits, y, torch.eye(5)), seg_loss(logits, y), atol=1e-5)
    m = torch.tensor([[1., 1., 0., 0., 0.], [0., 0., 1., 0., 0.], [0., 0., 0., 1., 1.]])
    l3 = label_remap_loss(logits, y.clamp(max=2), m)
    assert torch.isfinite(l3) and l3 >= 0
    with pytest.raises(ValueError, match="membership"):
        label_remap_loss(logits, y, torch.eye(4))


def test_dataset_model_has_no_extra_inference_cost():
    model = _tiny(heads=(11, 8))
    model.eval()
    x = torch.rand(1, 3, 32, 64)
    plain = PSPNet(8, depth=10, width=8, output_stride=8, dropout=0.0)
    single = cdcl.dataset_model(model, 1)
    with use_domain(model, 1):
        assert torch.allclose(single(x)["out"], model(x, head=1)["out"], atol=1e-6)
    assert count_parameters(single) == count_parameters(plain)
    assert count_flops(single, (1, 3, 32, 64)) == count_flops(plain, (1, 3, 32, 64))
    with pytest.raises(ValueError, match="out of range"):
        cdcl.dataset_model(model, 2)


def test_distribution_distance():
    a = torch.randn(1000).numpy()
    assert distribution_distance(a, a) == 0.0
    assert distribution_distance(a, a + 2.0) > distribution_distance(a, a + 0.1)
    with pytest.raises(ValueError):
        distribution_distance([], a)


def test_bad_inputs_fail_clearly():
    with pytest.raises(ValueError, match="mode"):
        cdcl.DATStep([cdcl.Route("a")], mode="mix")
    with pytest.raises(ValueError, match="interval"):
        cdcl.DATStep([cdcl.Route("a")], interval=0)
    with pytest.raises(ValueError, match="weights"):
        cdcl.DATStep([cdcl.Route("a")], weights=[1.0, 2.0])
    cfg = resolve("smoke", "cdcl")
    with pytest.raises(ValueError, match="unknown kind"):
        fit("cdcl", cfg, kind="joint", names=["city_a"])
    with pytest.raises(ValueError, match="init"):
        fit("cdcl", cfg, kind="finetune", names=["city_b"])
    with pytest.raises(ValueError, match="unknown toy-world dataset"):
        make_cdcl_datasets({**cfg, "datasets": ["city_z"]})


def test_smoke_kinds_train_evaluate_and_cache(tmp_path):
    cfg = resolve("smoke", "cdcl", cache_dir=str(tmp_path), iters=2, ft_iters=1)
    ds = make_cdcl_datasets(cfg)
    names = ["city_a", "city_c"]
    for kind, nm, init in [("finetune", ["city_c"], "city_a"), ("remap", names, None), ("dat", names, None)]:
        f = fit("cdcl", cfg, 0, ds, kind=kind, names=nm, init=init)
        model, meta = f.model, f.meta
        res = cdcl.evaluate_cdcl(model, kind, nm, ds, cfg)
        assert set(res) == set(nm) and all(0 <= r.miou <= 100 for r in res.values())
        assert meta["cached"] is False and meta["datasets"] == nm
        assert f.key == key_of("cdcl", cfg, 0, ds, kind=kind, names=nm, init=init)
    # the fine-tuned model's parent: the single-dataset model of its init dataset, same seed (now cached)
    assert fit("cdcl", cfg, 0, ds, kind="single", names=["city_a"]).cached
    again = fit("cdcl", cfg, 0, ds, kind="dat", names=names)
    assert again.meta["cached"] is True
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.model.state_dict().values()))
    wrong = cdcl.evaluate_cdcl(model, "dat", names, ds, cfg, branch={"city_a": 1})
    assert set(wrong) == set(names)


def test_paper_profile_constructs_and_runs_a_few_steps_on_cpu(tmp_path):
    """The paper profile (PSPNet ResNet-18 width 64, SGD 0.01, momentum 0.9, wd 1e-4, DSBN, three
    datasets) with sizes and counts overridden down: 64x64 crops, 4 images per city, batch 2,
    2 DAT iterations (3 datasets each), evaluation on 2 val images at 64x128."""
    cfg = resolve("paper", "cdcl", size=[64, 64], eval_size=[64, 128], n_train=4, n_val=2, iters=2,
                  batch_size=2, eval_batch_size=2, cache_dir=str(tmp_path), progress=False, render_device="cpu",
                  num_workers=0)
    assert (cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.depth, cfg.width) == ("sgd", 0.01, 1e-4, 18, 64)
    ds = make_cdcl_datasets(cfg)
    model, hist = cdcl.train_cdcl(cfg, "dat", cfg.datasets, 0, ds)
    assert len(hist.train) >= 1 and set(hist.train[-1]) >= {"seg_city_a", "seg_city_b", "seg_city_c", "total"}
    res = cdcl.evaluate_cdcl(model, "dat", cfg.datasets, ds, cfg)
    assert set(res) == set(cfg.datasets)


def _save(arr, path):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_real_data_root_layout_and_label_remap(tmp_path):
    """A tiny fake tree in the three layouts: Cityscapes (label ids), BDD100K (train ids),
    CamVid (SegNet ids, 11 = void); the datasets load and the remap covers Cityscapes' 19 classes."""
    import numpy as np

    rng = np.random.default_rng(0)
    img = lambda: rng.integers(0, 255, (16, 32, 3), dtype=np.uint8)  # noqa: E731
    for split in ("train", "val"):
        for k in range(2):
            _save(img(), tmp_path / "cityscapes" / "leftImg8bit" / split / "aachen" / f"aachen_{k:06d}_000019_leftImg8bit.png")
            _save(np.full((16, 32), 7, np.uint8),
                  tmp_path / "cityscapes" / "gtFine" / split / "aachen" / f"aachen_{k:06d}_000019_gtFine_labelIds.png")
            _save(img(), tmp_path / "bdd100k" / "images" / split / f"b{k}.jpg")
            _save(np.full((16, 32), 13, np.uint8), tmp_path / "bdd100k" / "labels" / split / f"b{k}_train_id.png")
            _save(img(), tmp_path / "camvid" / split / f"c{k}.png")
            lab = np.full((16, 32), 5, np.uint8)
            lab[:, :4] = 11
            _save(lab, tmp_path / "camvid" / f"{split}annot" / f"c{k}.png")
    cfg = resolve("paper", "cdcl", data_root=str(tmp_path), datasets=["cityscapes", "bdd100k", "camvid"],
                  size=[16, 16], eval_size=[16, 32])
    ds = make_cdcl_datasets(cfg)
    x, y = ds["camvid"]["train"][0]
    assert x.shape == (3, 16, 16) and set(y.unique().tolist()) <= {5, 255}
    assert int(ds["bdd100k"]["val"][0][1][0, 0]) == 13 and int(ds["cityscapes"]["val"][0][1][0, 0]) == 0
    remap = label_remap_for(ds)
    assert len(remap.union) == 19 and remap.membership(2).shape == (11, 19)
    assert torch.equal(remap.membership(0), torch.eye(19))
    assert bool((remap.membership(2).sum(0) <= 1).all()) and bool((remap.membership(2).sum(1) >= 1).all())
    with pytest.raises(ValueError, match="unknown real dataset"):
        make_cdcl_datasets({**cfg, "datasets": ["mapillary"]})


def test_moved_pieces_have_their_homes_and_old_paths_are_gone():
    """One home per name: kit.methods.cdcl exports none of the moved pieces (it imports the ones it
    uses itself); the rest are no attribute of it at all."""
    from kit import data
    from kit.data import labels
    from kit.methods import cdcl_analysis, cdcl_remap

    homes = {data: ("make_cdcl_datasets", "REAL_LAYOUT"), labels: ("CAMVID_CLASSES", "CAMVID_TO_CITYSCAPES"),
             cdcl_remap: ("LabelRemap", "label_remap_loss", "GroupedOutput", "label_remap_for"),
             cdcl_analysis: ("layer_statistics", "distribution_distance")}
    for home, names in homes.items():
        for name in names:
            assert hasattr(home, name) and name not in cdcl.__all__, name
    for name in ("REAL_LAYOUT", "LabelRemap", "layer_statistics", "distribution_distance", "CAMVID_CLASSES",
                 "CAMVID_TO_CITYSCAPES", "load_or_train_cdcl", "cache_key"):
        assert not hasattr(cdcl, name), name
