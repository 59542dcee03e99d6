"""Joint transforms keep image and label aligned, pad with ignore, and are seedable."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from kit.data.transforms import (
    ColorJitter, Compose, RandomCrop, RandomHorizontalFlip, RandomScale, Resize, to_tensor_pair,
)

H, W = 12, 20


def coord_pair(h=H, w=W):
    """Image whose channels encode (row, column); label = row * 1000 + column."""
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    image = torch.stack([yy / 100.0, xx / 100.0, torch.full((h, w), 0.5)]).float()
    return image, (yy * 1000 + xx).long()


def coords(image, label):
    """(row, col) read from the image and from the label."""
    return ((image[0] * 100, image[1] * 100),
            ((label // 1000).float(), (label % 1000).float()))


def assert_aligned(image, label, tol=1e-4):
    (iy, ix), (ly, lx) = coords(image, label)
    assert torch.allclose(iy, ly, atol=tol) and torch.allclose(ix, lx, atol=tol)


def test_crop_and_flip_keep_alignment():
    g = torch.Generator().manual_seed(0)
    t = Compose([RandomCrop((5, 7), generator=g), RandomHorizontalFlip(0.5, generator=g)])
    flips = 0
    for _ in range(10):
        img, lbl = t(*coord_pair())
        assert img.shape == (3, 5, 7) and lbl.shape == (5, 7) and lbl.dtype == torch.int64
        assert_aligned(img, lbl)
        flips += int(lbl[0, 0] % 1000 > lbl[0, -1] % 1000)
    assert 0 < flips < 10
    img, lbl = RandomHorizontalFlip(p=1.0)(*coord_pair())
    assert lbl[0, 0] == W - 1 and img[1, 0, 0] * 100 == pytest.approx(W - 1)
    assert torch.equal(RandomHorizontalFlip(p=0.0)(*coord_pair())[1], coord_pair()[1])


@pytest.mark.parametrize("size", [(6, 10), (24, 40), (9, 31)])
def test_resize_keeps_alignment(size):
    img, lbl = Resize(size)(*coord_pair())
    assert img.shape == (3, *size) and lbl.shape == size and lbl.dtype == torch.int64
    (iy, ix), (ly, lx) = coords(img, lbl)
    # bilinear (antialiased) vs nearest sampling of the same point: within one source pixel
    assert (iy - ly).abs().max() <= 1.0 + 1e-4 and (ix - lx).abs().max() <= 1.0 + 1e-4
    # nearest never invents a label value
    assert set(lbl.unique().tolist()) <= set(coord_pair()[1].unique().tolist())


def test_random_scale_range_and_alignment():
    g = torch.Generator().manual_seed(1)
    t = RandomScale(0.5, 2.0, generator=g)
    sizes = set()
    for _ in range(8):
        img, lbl = t(*coord_pair())
        h, w = lbl.shape
        assert 6 <= h <= 24 and 10 <= w <= 40 and img.shape[-2:] == lbl.shape
        (iy, ix), (ly, lx) = coords(img, lbl)
        assert (iy - ly).abs().max() <= 1.0 + 1e-4 and (ix - lx).abs().max() <= 1.0 + 1e-4
        sizes.add((h, w))
    assert len(sizes) > 1


def test_crop_pads_with_ignore():
    img, lbl = RandomCrop((15, 26), generator=torch.Generator().manual_seed(0))(*coord_pair())
    assert img.shape == (3, 15, 26) and lbl.shape == (15, 26)
    pad = lbl == 255
    assert pad.sum() == 15 * 26 - H * W  # every original pixel kept, the rest is ignore
    assert (img[:, pad] == 0).all()
    assert_aligned(img[:, ~pad].reshape(3, H, W), lbl[~pad].reshape(H, W))
    lbl2 = RandomCrop((14, 20), pad_label=7)(*coord_pair())[1]
    assert (lbl2[H:] == 7).all()


def test_seeded_generators_are_deterministic():
    def pipeline(seed):
        g = torch.Generator().manual_seed(seed)
        return Compose([RandomScale(0.5, 1.5, generator=g), RandomCrop(8, generator=g),
                        RandomHorizontalFlip(generator=g),
                        ColorJitter(0.3, 0.3, 0.3, generator=g)])

    a, b, c = pipeline(3), pipeline(3), pipeline(4)
    outs_a = [a(*coord_pair()) for _ in range(4)]
    outs_b = [b(*coord_pair()) for _ in range(4)]
    outs_c = [c(*coord_pair()) for _ in range(4)]
    for (ia, la), (ib, lb) in zip(outs_a, outs_b):
        assert torch.equal(ia, ib) and torch.equal(la, lb)
    assert any(not torch.equal(la, lc) for (_, la), (_, lc) in zip(outs_a, outs_c))
    torch.manual_seed(5)  # no generator: global RNG
    x = RandomCrop(6)(*coord_pair())[1]
    torch.manual_seed(5)
    assert torch.equal(RandomCrop(6)(*coord_pair())[1], x)


def test_color_jitter_touches_image_only():
    image, label = coord_pair()
    img, lbl = ColorJitter(0.5, 0.5, 0.5, generator=torch.Generator().manual_seed(0))(image, label)
    assert torch.equal(lbl, label) and img.min() >= 0 and img.max() <= 1
    assert torch.equal(ColorJitter()(image, label)[0], image)


def test_size_mismatch_and_bad_arguments():
    image, label = coord_pair()
    for t in (Resize(4), RandomScale(0.5, 1.0), RandomCrop(4), RandomHorizontalFlip(), ColorJitter()):
        with pytest.raises(ValueError, match="differ"):
            t(image, label[:-1])
    with pytest.raises(ValueError, match="float"):
        RandomCrop(4)(label[None].expand(3, H, W), label)
    with pytest.raises(ValueError):
        RandomScale(2.0, 1.0)
    with pytest.raises(ValueError):
        RandomCrop((0, 3))
    with pytest.raises(ValueError, match="preset"):
        Resize("nope")


def test_to_tensor_pair():
    arr = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    ids = np.arange(H * W, dtype=np.uint8).reshape(H, W)
    img, lbl = to_tensor_pair(Image.fromarray(arr), Image.fromarray(ids))
    assert img.dtype == torch.float32 and img.shape == (3, H, W) and 0 <= img.min() <= img.max() <= 1
    assert torch.equal(img, torch.from_numpy(arr).permute(2, 0, 1) / 255.0)
    assert lbl.dtype == torch.int64 and torch.equal(lbl, torch.from_numpy(ids).long())
    assert to_tensor_pair(Image.fromarray(arr), Image.fromarray(ids, "P"))[1].max() == ids.max()
    with pytest.raises(ValueError, match="single-channel"):
        to_tensor_pair(Image.fromarray(arr), Image.fromarray(arr))
    with pytest.raises(ValueError, match="differ"):
        to_tensor_pair(Image.fromarray(arr), Image.fromarray(ids[:-1]))
