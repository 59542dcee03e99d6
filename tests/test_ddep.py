"""DeP / DDeP: noise process, frozen encoder, head swap, label fractions, paper profile on CPU."""
import math

import pytest
import torch

from kit import losses
from kit.config import resolve
from kit.data import make_da_datasets
from kit.data.subsets import RepeatTo, label_fraction_sets, label_subset
from kit.fit import fit, key_of
from kit.methods import ddep
from kit.methods.ddep_analysis import encoder_digest


def _small_cfg(tmp_path, **kw):
    base = dict(progress=False, cache_dir=str(tmp_path / "cache"), run_dir=str(tmp_path / "run"), amp="off")
    base.update(kw)
    return resolve("smoke", "ddep", **base)


# -- the noise process ---------------------------------------------------------------
@pytest.mark.parametrize("sigma", [0.05, 0.2, 0.8])
def test_noise_has_stated_variance(sigma):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, 32, 32, generator=g)           # unit-variance "images"
    xn, eps = losses.noisy_image(x, sigma, generator=g)
    added = xn - math.sqrt(1 - sigma ** 2) * x
    assert torch.allclose(added, sigma * eps, atol=1e-6)
    assert abs(added.var().item() - sigma ** 2) < 0.02 * sigma ** 2
    # variance preserving: sqrt(gamma) x + sqrt(1 - gamma) eps keeps unit variance
    assert abs(xn.var().item() - 1.0) < 0.02
    # plain additive variant: x + sigma eps
    xa, eps = losses.noisy_image(x, sigma, scaled=False, generator=g)
    assert abs((xa - x).var().item() - sigma ** 2) < 0.02 * sigma ** 2


def test_noise_per_example_sigma_and_errors():
    x = torch.zeros(4, 3, 64, 64)
    s = torch.tensor([0.1, 0.2, 0.4, 0.8])
    xn, _ = losses.noisy_image(x, s, generator=torch.Generator().manual_seed(1))
    sd = xn.flatten(1).std(1)
    assert torch.allclose(sd, s, rtol=0.05)
    sig = losses.sample_sigma(500, 0.1, 0.3, torch.Generator().manual_seed(0))
    assert sig.shape == (500,) and sig.min() >= 0.1 and sig.max() <= 0.3
    with pytest.raises(ValueError, match="sigma must lie"):
        losses.noisy_image(x, 1.5)
    with pytest.raises(ValueError, match="tensor \\[B\\]"):
        losses.noisy_image(x, torch.tensor([0.1, 0.2]))
    with pytest.raises(ValueError, match="target must be"):
        losses.denoising_loss(x, x, x, "velocity")
    # the denoised estimate inverts the corruption exactly given the true noise
    xc = torch.rand(2, 3, 8, 8)
    xn, e = losses.noisy_image(xc, 0.3)
    assert torch.allclose(losses.denoised_estimate(xn, e, 0.3), xc, atol=1e-5)


# -- DDeP: the encoder does not move ---------------------------------------------------
def test_ddep_pretraining_leaves_encoder_bit_identical(tmp_path):
    cfg = _small_cfg(tmp_path, pretrain_iters=3)
    ds = make_da_datasets(cfg)
    torch.manual_seed(0)
    enc_model = ddep.build_unet(cfg, 3)
    for p in enc_model.encoder.parameters():           # a non-trivial "supervised" encoder
        p.data.normal_(0, 0.1)
    enc_state = {k: v.clone() for k, v in enc_model.encoder.state_dict().items()}
    ref = ddep.build_unet(cfg, 3)
    ref.encoder.load_state_dict(enc_state)
    before = encoder_digest(ref)
    model, hist = ddep.pretrain_denoising(cfg, ds["target_train"], seed=0, encoder_state=enc_state)
    assert encoder_digest(model) == before          # weights and BN buffers
    for k, v in model.encoder.state_dict().items():
        assert torch.equal(v.cpu(), enc_state[k]), k
    # ... while the decoder did train
    fresh = ddep.build_unet(cfg, 3)
    torch.manual_seed(0)
    assert any(not torch.equal(a.cpu(), b) for a, b in zip(model.decoder.state_dict().values(),
                                                            ref.decoder.state_dict().values()))
    assert len(hist.train) == 3 and "denoise" in hist.train[-1]
    # DeP trains the encoder too
    dep, _ = ddep.pretrain_denoising(cfg, ds["target_train"], seed=0)
    assert encoder_digest(dep) != encoder_digest(fresh)


# -- swapping the projection keeps the pretrained body ----------------------------------
def test_replace_head_keeps_body(tmp_path):
    cfg = _small_cfg(tmp_path, pretrain_iters=2)
    ds = make_da_datasets(cfg)
    nc = ds["target_train"].num_classes
    pre = fit("ddep_pretrain", cfg, 0, ds, kind="dep")
    assert not pre.cached and fit("ddep_pretrain", cfg, 0, ds, kind="dep").cached
    state = {k: v.clone() for k, v in pre.model.state_dict().items()}
    model = pre.model
    model.replace_head(nc)                              # what fine-tuning from DeP starts from
    assert model.head.out_channels == nc
    body = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    assert body and all(torch.equal(v, state[k]) for k, v in body.items())
    out = model(torch.rand(2, 3, *cfg.size))["out"]
    assert out.shape == (2, nc, *cfg.size)
    # DDeP: the supervised encoder is in the pretrained body (frozen during pretraining), head swapped or not
    enc = fit("ddep_encoder", cfg, 0, ds).model.encoder.state_dict()
    m2 = fit("ddep_pretrain", cfg, 0, ds, kind="ddep").model
    m2.replace_head(nc)
    assert all(torch.equal(v, enc[k]) for k, v in m2.encoder.state_dict().items())
    # fine-tuning starts from that pretraining: its cache name is the fine-tuned model's parent
    ft = fit("ddep", cfg, 0, ds, init="ddep", fraction=0.25)
    assert ft.meta["config"]["parents"] == [key_of("ddep_pretrain", cfg, 0, ds, kind="ddep")]
    assert ft.model.head.out_channels == nc and 0 <= ft.meta["miou"] <= 100
    with pytest.raises(ValueError, match="unknown init"):
        fit("ddep", cfg, 0, ds, init="imagenet", fraction=0.25)


# -- label fractions -----------------------------------------------------------------
def test_label_fractions_nested_and_seeded():
    sets = label_fraction_sets(1000, [0.01, 0.02, 0.05, 0.1, 0.25, 1.0], seed=3)
    sizes = [len(v) for v in sets.values()]
    assert sizes == [10, 20, 50, 100, 250, 1000]
    fr = list(sets)
    for a, b in zip(fr, fr[1:]):
        assert set(sets[a]) <= set(sets[b])
    assert sorted(sets[1.0]) == list(range(1000))
    assert label_subset(1000, 0.05, 3) == sets[0.05]          # seeded: reproducible
    assert label_subset(1000, 0.05, 4) != sets[0.05]          # another seed, another set
    assert len(label_subset(10, 0.01, 0)) == 1                 # never empty
    with pytest.raises(ValueError, match="label fraction"):
        label_subset(100, 0.0)
    rep = RepeatTo(list(range(5)), [1, 3], min_len=5)
    assert len(rep) >= 5 and set(rep[i] for i in range(len(rep))) == {1, 3}


# -- paper profile: constructs and runs a few steps on CPU --------------------------------
def test_paper_profile_runs_a_few_steps_on_cpu():
    # The paper profile's network (ResNet-18 at width 64 + a 12-layer Transformer on 512-d
    # tokens, input skip, sigma 0.2) and recipe, with sizes and counts overridden down:
    # 64x128 toy-world images, batch 2, ONE step of each stage (supervised encoder on the
    # source, DDeP decoder pretraining with the frozen encoder, fine-tuning on 25% of 8
    # labeled images), evaluation on 2 images. No cache (the checkpoints would be ~150 MB).
    cfg = resolve("paper", "ddep", size=[64, 128], eval_size=[64, 128], n_train=8, n_val=2, batch_size=2,
                  pretrain_batch_size=2, pretrain_iters=1, supervised_iters=1, iters=1, num_workers=0,
                  eval_batch_size=2, device="cpu", amp="off", progress=False, render_device="cpu")
    assert cfg.sigma == 0.2 and cfg.transformer_layers == 12 and cfg.input_skip
    ds = make_da_datasets(cfg)
    sup, _ = ddep.train_supervised_encoder(cfg, ds["source_train"], seed=0)
    assert sum(p.numel() for p in sup.decoder.bottleneck.parameters()) > 10_000_000
    enc = {k: v.clone() for k, v in sup.encoder.state_dict().items()}
    model, hist = ddep.pretrain_denoising(cfg, ds["target_train"], seed=0, encoder_state=enc)
    assert all(torch.equal(v, enc[k]) for k, v in model.encoder.state_dict().items())
    tgt = ds["target_train"]
    model.replace_head(tgt.num_classes)
    train_set = RepeatTo(tgt, label_subset(len(tgt), 0.25, 0), cfg.batch_size)
    ft = ddep.finetune(cfg, model, train_set, ds["target_val"], seed=0)
    assert 0.0 <= ft.val[-1]["miou"] <= 100.0 and len(hist.train) == 1
