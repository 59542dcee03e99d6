"""The toy world's camera and render loop: from a scene's slot map to images and labels.

Holds the rasteriser's driver (:func:`_render_chunked` renders a batch in chunks of about
2^21 pixels on CPU; :func:`_render` gathers each pixel's colour, texture amplitude and label
from its slot), the per-image camera (:func:`_camera`: light, colour cast, saturation,
gradient, shadow) and appearance (:func:`_appearance`: texture, shadow, blur, sensor
noise), the texture and noise strips their crops are read from (in blocks of consecutive
indices, :func:`_crop_block`), the Gaussian blur and the per-thread scratch buffers
(:func:`_workspace`).

Internals of :func:`kit.data.world.render`; the scene geometry is in
:mod:`kit.data.world_scene`.
"""
from __future__ import annotations

import math
import threading

import torch
import torch.nn.functional as F

from .world_spec import ROAD, SKY, VEG, WORLD_CLASSES, DomainSpec, hash_uniform
from .world_scene import _lerp, _Rand, _scene

#: texture amplitude of each world class, relative to the domain's ``texture``
_TEXTURE_GAIN = tuple({SKY: 0.3, VEG: 1.6, ROAD: 0.8}.get(c, 1.0) for c in range(len(WORLD_CLASSES)))


#: texture and noise crops come in blocks of consecutive image indices: inside a block, the
#: crop of image i lies at a fixed step from that of image i - 1, so that a run of
#: consecutive indices (what the datasets render) reads its crops as one strided view
#: instead of one small operation per image. Blocks hold up to 64 images, fewer at sizes
#: where an image is large enough that one operation per image costs nothing extra.
_CROP_PIXELS = 1 << 21


def _crop_block(H: int, W: int) -> int:
    return max(1, min(64, _CROP_PIXELS // (H * W)))


def _crop_runs(idx: torch.Tensor, K: int) -> tuple[list[int], list[int], list[int], torch.Tensor]:
    """Split a batch into runs of consecutive indices inside one block of ``K`` images.

    Returns the runs' first and end positions in the batch, the position of the run's
    first image inside its block (``i mod K``) and the block numbers (``i // K``) as a
    tensor, from which the callers hash each block's own offset."""
    B = idx.shape[0]
    q = torch.div(idx, K, rounding_mode="floor")
    cut = torch.ones(B, dtype=torch.bool, device=idx.device)
    cut[1:] = (idx[1:] != idx[:-1] + 1) | (q[1:] != q[:-1])
    first = cut.nonzero().view(-1)
    starts = first.tolist()
    return starts, starts[1:] + [B], (idx[first] - q[first] * K).tolist(), q[first]


_TEXTURES: dict[tuple, tuple[torch.Tensor, int]] = {}


def _texture_strip(seed: int, device: torch.device, H: int, W: int) -> tuple[torch.Tensor, int]:
    """Smooth value noise in [-1, 1] on a strip [(K + 1) Dy + H, 2W], Dy = ceil(H / 3): the
    mean of a coarse grid (cells of at most H/6 x W/12 pixels) and a fine one (H/24 x W/48),
    hashed from ``seed`` and upsampled bilinearly. In a block of K = :func:`_crop_block`
    images, image i reads the H x W crop ``(i mod K) Dy`` rows below the block's own hashed
    offset. Returns the strip and Dy."""
    key = (seed, str(device), H, W)
    if key not in _TEXTURES:
        K, Dy = _crop_block(H, W), -(-H // 3)
        rows = (K + 1) * Dy + H
        gh = -(-rows * 6 // H)

        def grid(salt, gh, gw):
            yy = torch.arange(gh + 1, device=device)[:, None]
            xx = torch.arange(gw + 1, device=device)[None, :]
            return (hash_uniform(seed, salt, yy * 4099 + xx) * 2 - 1)[None, None]

        fine = grid(2, 4 * gh, 96)
        coarse = F.interpolate(grid(1, gh, 24), size=fine.shape[-2:], mode="bilinear", align_corners=True)
        tile = F.interpolate((coarse + fine) * 0.5, size=(rows, 2 * W), mode="bilinear", align_corners=True)
        if len(_TEXTURES) >= 8:     # one per domain at one size; about 28 MB each at 1024x2048
            _TEXTURES.pop(next(iter(_TEXTURES)))
        _TEXTURES[key] = (tile[0, 0].contiguous(), Dy)
    return _TEXTURES[key]


_TILES: dict[tuple, tuple[torch.Tensor, int, int]] = {}
_SCALED_TILES: dict[tuple, tuple[torch.Tensor, int, int]] = {}


def _noise_strip(device: torch.device, H: int, W: int, amplitude: float) -> tuple[torch.Tensor, int, int]:
    """Noise of standard deviation ``amplitude`` plus 0.5 (the rounding offset of
    :func:`_render`), independent per element (triangular distribution), on a flat strip.

    A noise plane is an H x W window with row stride ``Ws = W + 13``; the planes of a block
    of K = :func:`_crop_block` images (3 per image, one per channel) follow each other at a
    step ``Q = 37 Ws + 211`` elements (about 37 rows: planes overlap only shifted, never
    pixel on pixel), after the block's own hashed offset below ``3 Q``. Returns the strip,
    Ws and Q."""
    key = (str(device), H, W)
    skey = key + (amplitude,)
    if skey in _SCALED_TILES:
        return _SCALED_TILES[skey]
    if key not in _TILES:
        K, Ws = _crop_block(H, W), W + 13
        Q = 37 * Ws + 211
        k = torch.arange(3 * Q + 3 * K * Q + H * Ws, device=device)
        u = hash_uniform(7919, k) + hash_uniform(104729, k) - 1.0
        if len(_TILES) >= 4:
            _TILES.pop(next(iter(_TILES)))
        _TILES[key] = (u.mul_(math.sqrt(6.0)), Ws, Q)                 # var(u1 + u2 - 1) = 1/6
    unit, Ws, Q = _TILES[key]
    if len(_SCALED_TILES) >= 8:     # one per domain at one size: about 5 MB each
        _SCALED_TILES.pop(next(iter(_SCALED_TILES)))
    _SCALED_TILES[skey] = (unit * amplitude + 0.5, Ws, Q)
    return _SCALED_TILES[skey]


def _gaussian_blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of images [B,C,H,W] along H and W.

    Kernels that keep more than 99% of each pixel (sigma below about 0.33 px) are skipped.

    Zero-padded and renormalised by the weight that fell inside the image, so borders keep
    their brightness (a normalised convolution). Written as shifted in-place adds, which on
    CPU is many times faster than a depthwise convolution with these small kernels.
    """
    if sigma <= 0:
        return img
    r = max(1, int(math.ceil(2.5 * sigma)))
    k = [math.exp(-0.5 * (d / sigma) ** 2) for d in range(-r, r + 1)]
    s = sum(k)
    k = [v / s for v in k]
    if k[r] > 0.99:     # keeps over 99% of every pixel: below what the eye or uint8 storage sees
        return img
    for dim in (2, 3):
        n = img.shape[dim]
        out = img * k[r]
        for j in range(1, min(r, n - 1) + 1):
            out.narrow(dim, j, n - j).add_(img.narrow(dim, 0, n - j), alpha=k[r - j])
            out.narrow(dim, 0, n - j).add_(img.narrow(dim, j, n - j), alpha=k[r + j])
        def renorm(positions):
            """1 / (kernel weight that falls inside the image) at these positions, shaped along dim."""
            w = [1 / sum(k[r + d] for d in range(-r, r + 1) if 0 <= i + d < n) for i in positions]
            shape = [1, 1, 1, 1]
            shape[dim] = len(w)
            return torch.tensor(w, dtype=img.dtype, device=img.device).view(shape)

        if n > 2 * r:   # only the first and last r positions lost weight
            out.narrow(dim, 0, r).mul_(renorm(range(r)))
            out.narrow(dim, n - r, r).mul_(renorm(range(n - r, n)))
        else:
            out.mul_(renorm(range(n)))
        img = out
    return img



_WORK = threading.local()


def _workspace(name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A scratch tensor kept between calls (per thread). Large tensors allocated afresh on
    every call cost the CPU a page fault per 4 kB the first time they are written, which
    was a third of the renderer's time; the caller copies out of it before returning."""
    bufs = getattr(_WORK, "bufs", None)
    if bufs is None:
        bufs = _WORK.bufs = {}
    key = (name, str(device), dtype)
    buf = bufs.get(key)
    n = math.prod(shape)
    if buf is None or buf.numel() < n:
        buf = bufs[key] = torch.empty(n, dtype=dtype, device=device)
    return buf[:n].view(shape)


#: images per internal batch on CPU: about 2^21 pixels, so that the working set stays in cache
_CHUNK_PIXELS = 1 << 21


def _render_chunked(spec: DomainSpec, split: int, idx: torch.Tensor, H: int, W: int, quantize: bool):
    B = idx.shape[0]
    dev = idx.device
    images = torch.empty(B, 3, H, W, dtype=torch.uint8 if quantize else torch.float32, device=dev)
    labels = torch.empty(B, H, W, dtype=torch.uint8 if quantize else torch.int64, device=dev)
    step = max(B, 1) if dev.type != "cpu" else max(1, _CHUNK_PIXELS // (H * W))
    for lo in range(0, B, step):
        img = _render(spec, split, idx[lo:lo + step], H, W, labels[lo:lo + step])
        if quantize:    # img holds 255 x + 0.5, which the cast truncates: round(255 x)
            img.clamp_(0, 255.5)
        else:
            img.sub_(0.5).clamp_(0, 255).mul_(1 / 255)
        images[lo:lo + step] = img.permute(1, 0, 2, 3)
    return images, labels


def _render(spec: DomainSpec, split: int, idx: torch.Tensor, H: int, W: int, labels: torch.Tensor) -> torch.Tensor:
    """Images as float [3,B,H,W] (channel-major, a scratch buffer: copy it before the next
    call) holding ``255 x + 0.5`` of the image x in [0, 1], not yet clipped; the labels are
    written into ``labels`` [B,H,W] (contiguous)."""
    B = idx.shape[0]
    slot, colors, classes = _scene(spec, split, idx, H, W)
    cam = _camera(spec, split, idx)
    S = colors.shape[1]
    # one flat index into the per-image slot tables serves colours, texture and labels
    dev = idx.device
    flat = _workspace("flat", (B, H, W), torch.int32, dev)
    flat.copy_(slot).add_((torch.arange(B, dtype=torch.int32, device=dev) * S).view(B, 1, 1))
    flat = flat.view(-1)
    colors = torch.bmm(colors, cam["color"])                   # gain, colour cast and saturation
    planes = colors.permute(2, 0, 1).reshape(3, -1)             # [3, B * S]
    rgb = _workspace("rgb", (3, B, H, W), torch.float32, dev)   # channel-major while it is worked on
    for c in range(3):
        torch.index_select(planes[c], 0, flat, out=rgb[c].view(-1))
    gain = torch.tensor(_TEXTURE_GAIN, device=idx.device)[classes] * spec.texture          # [B,S]
    amp = _workspace("amp", (B, H, W), torch.float32, dev)
    torch.index_select(gain.reshape(-1), 0, flat, out=amp.view(-1))
    image = _appearance(spec, split, idx, cam, rgb, amp, H, W)
    lut = spec.label_lut().to(idx.device, labels.dtype)[classes]                              # [B,S]
    torch.index_select(lut.reshape(-1), 0, flat, out=labels.view(-1))
    return image


def _camera(spec: DomainSpec, split: int, idx: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image camera parameters: light, colour cast, saturation, light gradient, shadow.

    Gain, cast and saturation are linear maps of the colour that commute with the
    per-pixel scalar factors (texture, shading, gradient, shadow) and with the blur, so
    they are applied once to each image's slot colours (``color``, [B,3,3]: a row vector
    of RGB times this matrix, which also scales [0, 1] to [0, 255]) instead of to every pixel.
    """
    B = idx.shape[0]
    dev = idx.device
    R = _Rand(spec.seed + 1000, split, idx, block=8)
    gain = _lerp(*spec.light, R())
    cam = {"grad": _lerp(-0.15, 0.15, R())}
    cast = 1 + (R(3) - 0.5) * 0.12 * (1 + spec.texture)
    s = spec.saturation
    mix = torch.full((3, 3), (1 - s) / 3, device=dev) + s * torch.eye(3, device=dev)   # x -> grey + s (x - grey)
    cam["color"] = (gain.view(B, 1, 1) * cast.view(B, 3, 1)) * mix * 255    # images are worked on in 0..255
    if spec.shadows > 0:
        cam["shadow_angle"] = _lerp(-1.0, 1.0, R())
        cam["shadow_offset"] = _lerp(0.2, 0.8, R())
        cam["shadow_depth"] = 0.4 * (R() < spec.shadows).to(torch.float32)
    return cam


def _appearance(spec: DomainSpec, split: int, idx: torch.Tensor, cam: dict[str, torch.Tensor], rgb: torch.Tensor,
                amp: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """Camera colours [3,B,H,W] (0..255) -> a camera image: texture, light gradient, shadow,
    blur, noise, plus 0.5 (see :func:`_render`).

    ``amp``: texture amplitude per pixel. The per-pixel factors are multiplied into one
    scalar map, applied once to the colours.
    """
    B = idx.shape[0]
    dev = idx.device
    starts, ends, first, block = _crop_runs(idx, _crop_block(H, W))      # texture and noise crops, per run
    if spec.texture > 0:
        tile, Dy = _texture_strip(spec.seed, dev, H, W)
        Ws = tile.shape[1]
        jy = (hash_uniform(spec.seed, split + 20, block) * Dy).long().tolist()
        jx = (hash_uniform(spec.seed, split + 30, block) * (W + 1)).long().tolist()
        for s, e, r, y, x in zip(starts, ends, first, jy, jx):
            amp[s:e].mul_(tile.as_strided((e - s, H, W), (Dy * Ws, Ws, 1), (r * Dy + y) * Ws + x))
    scale = amp.add_(1)                             # amp is 0 without texture
    ys = torch.linspace(0, 1, H, device=dev).view(1, H, 1)
    scale.mul_(1 + cam["grad"].view(B, 1, 1) * (ys - 0.5))             # vertical light gradient
    if spec.shadows > 0:
        # a soft shadow cast across the scene by a half-plane
        xs = torch.linspace(0, 1, W, device=dev).view(1, 1, W)
        ang, off = cam["shadow_angle"].view(B, 1, 1), cam["shadow_offset"].view(B, 1, 1)
        sh = torch.add((xs - off) * 40, (ang * 40) * (ys - 0.5), out=_workspace("shadow", (B, H, W), torch.float32, dev))
        sh.sigmoid_().mul_(cam["shadow_depth"].view(B, 1, 1))
        scale.addcmul_(scale, sh, value=-1.0)
    img = _gaussian_blur(rgb.mul_(scale), spec.blur * H / 256.0)
    if spec.noise > 0 and B:
        # sensor noise: windows of a fixed strip of hashed noise (see _noise_strip), which
        # also adds the 0.5
        strip, Ws, Q = _noise_strip(dev, H, W, 255 * spec.noise)
        j = (hash_uniform(spec.seed + 1000, split, block) * (3 * Q)).long().tolist()
        for s, e, r, o in zip(starts, ends, first, j):
            img[:, s:e].add_(strip.as_strided((3, e - s, H, W), (Q, 3 * Q, Ws, 1), o + 3 * r * Q))
    else:
        img.add_(0.5)
    return img
