"""The toy world: procedural street scenes with per-pixel labels, rendered on the fly.

Every image is a pure function of ``(domain, split, index)`` and the output size:
all randomness comes from a counter-based integer hash (:func:`hash_uniform`), so an
image does not depend on which other images are rendered with it, on the batch size,
or on the device. Rendering is vectorized over a batch of images in torch and runs on
CPU or GPU.

Scenes share one geometry -- sky, a street that runs to a vanishing point, sidewalks,
optional terrain strips, building facades on both sides, and objects standing on the
ground (cars on the road; people, poles with signs, trees and bicycles on the
sidewalk), drawn far-to-near -- while each domain has its own *appearance* (palette,
texture, blur, sensor noise, lighting) and *layout statistics* (horizon height, road
width, object counts and sizes). That is the situation the domain-adaptation papers
address: the same kind of scene, seen through another renderer or camera.

The world's definition (label space, hash, domains) is :mod:`kit.data.world_spec`.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch.utils.data import Dataset

from .world_render import _render_chunked
from .world_spec import RENDER_VERSION, SPLITS, DomainSpec, get_domain

__all__ = ["render", "render_uint8", "ToyWorld", "world_pair"]


# ----------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------
# The rasteriser's internals live in kit/data/world_scene.py (scene geometry, objects, the
# painter) and kit/data/world_render.py (camera, appearance, the chunked render loop).
def _check_render_args(domain, index, size, split, device):
    spec = get_domain(domain)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
    try:
        H, W = (int(size[0]), int(size[1]))
    except (TypeError, IndexError, ValueError):
        raise ValueError(f"size must be (H, W) integers, got {size!r}") from None
    if H < 16 or W < 16:
        raise ValueError(f"size must be at least 16x16, got {H}x{W}")
    if isinstance(index, torch.Tensor):
        dev = torch.device(device) if device is not None else index.device
        idx = index.to(dev, torch.int64).reshape(-1)
    else:
        dev = torch.device(device) if device is not None else torch.device("cpu")
        idx = torch.as_tensor([index] if isinstance(index, int) else list(index), dtype=torch.int64, device=dev)
    if idx.numel() and int(idx.min()) < 0:
        raise ValueError("image indices must be >= 0")
    return spec, SPLITS[split], idx, H, W


@torch.no_grad()
def render(domain: str | DomainSpec, index: torch.Tensor | Sequence[int] | int, size: tuple[int, int] = (64, 128),
           split: str = "train", device: str | torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Render images and labels of a domain.

    Args:
        domain: a name in :data:`DOMAINS` or a :class:`DomainSpec`.
        index: image indices (int, sequence or 1-D int tensor), any values >= 0.
        size: output ``(H, W)``; any size >= 16x16. Scenes are defined in normalized
            coordinates, so the same index gives the same scene at every resolution.
        split: "train", "val" or "test" (each split is its own stream of scenes).
        device: where to render (default: the index tensor's device, else CPU).

    Returns:
        ``images`` float32 [B,3,H,W] in [0,1] and ``labels`` int64 [B,H,W] in the
        domain's label space (255 = ignore).
    """
    spec, split_id, idx, H, W = _check_render_args(domain, index, size, split, device)
    return _render_chunked(spec, split_id, idx, H, W, quantize=False)


@torch.no_grad()
def render_uint8(domain: str | DomainSpec, index: torch.Tensor | Sequence[int] | int,
                 size: tuple[int, int] = (64, 128), split: str = "train",
                 device: str | torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`render` quantized for storage: ``images`` uint8 [B,3,H,W] (``round(255 x)``) and
    ``labels`` uint8 [B,H,W]. What :class:`ToyWorld` keeps in memory."""
    spec, split_id, idx, H, W = _check_render_args(domain, index, size, split, device)
    return _render_chunked(spec, split_id, idx, H, W, quantize=True)


# ----------------------------------------------------------------------------------
# Dataset
# ----------------------------------------------------------------------------------
class ToyWorld(Dataset):
    """A split of one domain of the toy world as an ordinary map-style dataset.

    ``ToyWorld("real", "val", size=(64, 128), length=200)[i]`` returns
    ``(image float32 [3,H,W] in [0,1], label int64 [H,W])`` with 255 = ignore.
    Images are rendered in chunks on first access and kept (uint8) in memory, so
    epochs after the first cost nothing; ``cache=False`` renders every access.

    Splits never overlap: each split is its own hashed stream of scenes.

    ``device="cuda"`` renders (and keeps) the images on the GPU, so a GPU run never
    waits for CPU-side data loading; ``"auto"`` picks CUDA when available.
    """

    CHUNK = 256

    def __init__(self, domain: str | DomainSpec = "synthetic", split: str = "train", size: tuple[int, int] = (64, 128),
                 length: int | None = None, transform: Callable | None = None, cache: bool = True,
                 offset: int = 0, device: str | torch.device = "cpu"):
        self.spec = get_domain(domain)
        if str(device) == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
        self.split = split
        self.size = (int(size[0]), int(size[1]))
        if self.size[0] < 16 or self.size[1] < 16:
            raise ValueError(f"size must be at least 16x16, got {self.size}")
        default = self.spec.train_size if split == "train" else self.spec.val_size
        self.length = int(default if length is None else length)
        if self.length <= 0:
            raise ValueError(f"length must be positive, got {self.length}")
        self.offset = int(offset)
        self.transform = transform
        self.cache = cache
        self._chunks: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def classes(self) -> tuple[str, ...]:
        return self.spec.classes

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    @property
    def domain(self) -> str:
        return self.spec.name

    @property
    def fingerprint(self) -> str:
        """Changes whenever the rendered content could change (domain spec, renderer, split, size)."""
        from ..hashing import config_hash

        spec = {k: v for k, v in self.spec.__dict__.items() if k != "description"}
        return config_hash({"spec": spec, "renderer": RENDER_VERSION, "split": self.split, "size": self.size,
                            "length": self.length, "offset": self.offset})

    def __len__(self) -> int:
        return self.length

    def __repr__(self) -> str:
        return f"ToyWorld({self.spec.name!r}, {self.split!r}, size={self.size}, length={self.length})"

    def _chunk(self, c: int) -> tuple[torch.Tensor, torch.Tensor]:
        if c not in self._chunks:
            lo = c * self.CHUNK
            hi = min(lo + self.CHUNK, self.length)
            pair = render_uint8(self.spec, torch.arange(lo, hi, device=self.device) + self.offset, self.size,
                                self.split)
            if not self.cache:
                return pair
            self._chunks[c] = pair
        return self._chunks[c]

    def __getitem__(self, i: int):
        if not -self.length <= i < self.length:
            raise IndexError(f"index {i} out of range for {self!r}")
        i = i % self.length
        img, lab = self._chunk(i // self.CHUNK)
        j = i % self.CHUNK
        image = img[j].to(torch.float32) / 255.0
        label = lab[j].to(torch.int64)
        if self.transform is not None:
            image, label = self.transform(image, label)
        return image, label

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole split as (uint8 images [N,3,H,W], int64 labels [N,H,W])."""
        n = (self.length + self.CHUNK - 1) // self.CHUNK
        parts = [self._chunk(c) for c in range(n)]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]).to(torch.int64)


def world_pair(source: str = "synthetic", target: str = "real", size: tuple[int, int] = (64, 128),
               n_train: int | None = None, n_val: int | None = None) -> dict[str, ToyWorld]:
    """The four datasets of a domain-adaptation experiment: source/target x train/val."""
    return {
        "source_train": ToyWorld(source, "train", size, n_train),
        "source_val": ToyWorld(source, "val", size, n_val),
        "target_train": ToyWorld(target, "train", size, n_train),
        "target_val": ToyWorld(target, "val", size, n_val),
    }
