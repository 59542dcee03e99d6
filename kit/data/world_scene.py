"""The toy world's scene geometry: what each pixel of an image shows, before the camera.

Holds the rasteriser's per-image random streams (:class:`_Rand`, addressed slots of
:func:`~kit.data.world_spec.hash_uniform`), the slot layout of a scene (sky, ground bands,
facades, then one slot per object shape in depth order), the scene itself
(:func:`_scene`: layout, ground bands, facades and the slot tables of colour and class),
the objects standing in it (:func:`_objects`: cars, people, bicycles, poles with signs,
trees) and the painter that draws their shapes into the slot map (:func:`_paint`, with
:func:`_paint_dense` as the reference the tests compare it with).

Internals of :func:`kit.data.world.render`; the camera that turns slots into an image is in
:mod:`kit.data.world_render`.
"""
from __future__ import annotations

import math

import torch

from .world_spec import (
    _DEFAULT_COUNTS,
    BICYCLE,
    BUILDING,
    CAR,
    PERSON,
    POLE,
    ROAD,
    SIDEWALK,
    SIGN,
    SKY,
    TERRAIN,
    VEG,
    DomainSpec,
    hash_uniform,
)

_MAX = {"car": 8, "person": 6, "pole": 6, "sign": 6, "tree": 6, "bicycle": 4}
_SHAPE_RECT, _SHAPE_ELLIPSE, _SHAPE_RING = 0, 1, 2

# A scene is first drawn as a map of *slots*: what each pixel shows, before the camera.
# Slots 0-4 are sky, terrain, sidewalk, road and the road's dashed centre line (the
# ground bands are nested, so a ground pixel's slot is the number of bands it lies in);
# then two slots (wall, window) for each of the facades, which sit side by side
# (_FACADES per side of the street); then one slot per object shape, in depth order, so
# that the nearest shape covering a pixel is simply the largest slot there. Each image
# has a small table of colours, classes and texture amplitudes per slot; pixels gather
# from it.
_FACADES = 13
_SLOT_DASH, _SLOT_FACADE = 4, 5
_N_BG = _SLOT_FACADE + 2 * 2 * _FACADES
_BG_CLASSES = (SKY, TERRAIN, SIDEWALK, ROAD, ROAD) + (BUILDING,) * (_N_BG - _SLOT_FACADE)


class _Rand:
    """Per-image uniform numbers, addressed by consecutive slots (hashed in blocks)."""

    def __init__(self, seed: int, split: int, index: torch.Tensor, block: int = 256):
        """``block``: slots hashed at a time (the numbers do not depend on it; a block about
        the size of what the caller draws saves hashing slots that are never read)."""
        self.seed, self.split, self.index, self.block = seed, split, index, block
        self._next = 0
        self._u = torch.empty(index.shape[0], 0, device=index.device)

    def __call__(self, n: int | None = None) -> torch.Tensor:
        """[B] (n is None) or [B, n] uniforms; each call gets fresh slots."""
        lo, hi = self._next, self._next + (1 if n is None else n)
        have = self._u.shape[1]
        if hi > have:
            slots = torch.arange(have, max(hi, have + self.block), device=self.index.device)
            more = hash_uniform(self.seed, self.split, self.index[:, None], slots[None, :])
            self._u = torch.cat([self._u, more], dim=1)
        self._next = hi
        return self._u[:, lo] if n is None else self._u[:, lo:hi]


def _lerp(lo: float, hi: float, u: torch.Tensor) -> torch.Tensor:
    return lo + (hi - lo) * u


def _scene(spec: DomainSpec, split: int, idx: torch.Tensor, H: int, W: int):
    """Scene geometry: the slot map [B,H,W] (uint8) and per-image slot tables of base colour
    [B,S,3] and world class [B,S]."""
    dev = idx.device
    B = idx.shape[0]
    R = _Rand(spec.seed, split, idx, block=320)      # a scene draws 301 numbers
    aspect = W / H
    ys = ((torch.arange(H, device=dev, dtype=torch.float32) + 0.5) / H).view(1, H, 1)
    xs = ((torch.arange(W, device=dev, dtype=torch.float32) + 0.5) / W).view(1, 1, W)
    col = lambda t: t.view(B, 1, 1)  # noqa: E731

    # --- global layout -------------------------------------------------------------
    yh = _lerp(*spec.horizon, R())
    xv = _lerp(0.38, 0.62, R())
    road_w = _lerp(*spec.road_width, R())
    side_w = _lerp(0.25, 0.5, R())
    terr_w = _lerp(0.25, 0.6, R())
    terr_l = R() < spec.terrain_prob
    terr_r = R() < spec.terrain_prob
    curve = _lerp(-0.12, 0.12, R())
    gap = _lerp(0.02, 0.08, R())
    seg_w = _lerp(0.05, 0.12, R())

    # per row: ground depth t in (0, 1], the street centre and the band half-widths; rows
    # above the horizon get negative widths, so no pixel there falls inside a band
    t = ((ys - col(yh)) / (1 - col(yh))).clamp(min=0)                  # [B,H,1]
    center = col(xv) + col(curve) * (1 - t) ** 2
    below = ys > col(yh)
    rw = torch.where(below, col(road_w) * t, -1.0)                     # road half width
    walk = torch.where(below, rw * (1 + col(side_w)), -1.0)
    terr = rw * (1 + col(side_w) + col(terr_w))
    terr_left = torch.where(below, torch.where(col(terr_l), terr, walk), -1.0)
    terr_right = torch.where(below, torch.where(col(terr_r), terr, walk), -1.0)
    dashed = below & (torch.sin(2 * math.pi * 2.0 / (t + 0.05)) > 0)
    dash = torch.where(dashed, 0.012 * t, -1.0)
    # per column: facades with piecewise-constant heights, taller towards the image edges
    ax_v = (xs - col(xv)).abs()                                         # [B,1,W]
    seg = torch.floor(ax_v / col(seg_w)).to(torch.int64).clamp(max=_FACADES - 1)
    facade = seg * 2 + (xs > col(xv)).to(torch.int64)                  # which facade, [B,1,W]
    hseg = hash_uniform(spec.seed, split, col(idx), facade)
    y_top = col(yh) - (0.12 + 1.5 * ax_v) * (0.25 + 0.75 * hseg)
    y_top = torch.where(ax_v < col(gap), col(yh), y_top)

    # ground bands as runs of columns per row: pixel x lies in a band of half-width w
    # around c when |(x + 0.5) / W - c| < w. Runs are added up with events and a
    # cumulative sum: +-16 for the terrain band, +-1 for sidewalk, road and dash.
    u8 = torch.uint8
    left = torch.cat([terr_left, walk, rw, dash], dim=2)               # [B,H,4]
    right = torch.cat([terr_right, walk, rw, dash], dim=2)
    first = (torch.floor((center - left) * W - 0.5) + 1).clamp(0, W).long()
    stop = torch.maximum(torch.ceil((center + right) * W - 0.5).clamp(0, W).long(), first)
    weight = torch.tensor([16, 1, 1, 1], dtype=u8, device=dev).expand(B, H, 4)
    events = torch.zeros(B, H, W + 1, dtype=u8, device=dev)
    events.scatter_add_(2, first, weight).scatter_add_(2, stop, weight.neg())    # uint8 wraps: -w = 256 - w
    bands = events.cumsum(2, dtype=u8)[..., :W]
    ground = bands >> 4                                                  # 1 inside the terrain band
    # facade slots: wall or window, below the facade top
    win_x = (torch.sin(2 * math.pi * (xs - col(xv)) / col(seg_w) * 3) > 0.2).to(u8)
    floors = 15 + 25 * hash_uniform(spec.seed, split + 11, col(idx))            # window rows per image height
    win_y = (torch.sin((2 * math.pi) * ys * floors) > 0.1).to(u8)
    wall = (_SLOT_FACADE + 2 * facade).to(u8)
    # built below the facade top: row y > floor(y_top H - 0.5), i.e. (y + 0.5) / H > y_top; as
    # integer arithmetic (comparisons producing bool are many times slower on CPU)
    rows = torch.arange(H, device=dev, dtype=torch.int16).view(1, H, 1)
    top = torch.floor(y_top * H - 0.5).clamp_(-1, H).to(torch.int16)
    built = (rows - top).clamp_(0, 1).to(u8)
    slot = (1 - ground) * built * (wall + win_y * win_x) + ground * (1 + (bands & 15))

    # --- objects, painted over the background in depth order ---------------------------
    pal = torch.tensor(spec.palette, dtype=torch.float32, device=dev)          # [11,3]
    img_jit = (R(3) - 0.5) * 2 * spec.color_jitter                              # [B,3]
    groups = _objects(spec, R, B, yh, xv, curve, road_w, side_w, aspect, dev)
    shapes = _shapes(groups)
    _paint(slot, shapes, H, W)

    # --- slot tables -------------------------------------------------------------------
    cls, ocol, order = shapes[0], shapes[6], shapes[8]
    bg = pal[list(_BG_CLASSES)].unsqueeze(0) + img_jit.unsqueeze(1)            # [B,S_bg,3]
    bg[:, _SLOT_DASH] = 0.92
    # each facade its own shade; windows darker
    k = torch.arange(2 * _FACADES, device=dev)
    shade = 1 + (hash_uniform(spec.seed, split + 7, idx[:, None], k) - 0.5) * 0.35          # [B,2F]
    shade = torch.stack([shade, shade * 0.6], dim=2).view(B, -1, 1)
    bg[:, _SLOT_FACADE:] *= shade
    colors = torch.cat([bg, torch.gather(ocol, 1, order.unsqueeze(-1).expand(-1, -1, 3))], dim=1)
    classes = torch.cat([torch.tensor(_BG_CLASSES, device=dev).expand(B, -1), torch.gather(cls, 1, order)], dim=1)
    return slot, colors, classes


def _shapes(groups):
    """Concatenate shape groups; rank shapes by depth per image (1 = farthest, 0 = absent)."""
    cls, depth, cx, cy, hw, hh, kind, ocol = (torch.cat([g[i] for g in groups], dim=1) for i in range(8))
    present = cx > -5
    B, N = cls.shape
    order = torch.argsort(depth.masked_fill(~present, -1e9), dim=1, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(1, N + 1, device=cls.device).expand(B, N))
    rank = torch.where(present, rank, 0)
    return cls, cx, cy, hw, hh, kind, ocol, present, order, rank


def _shape_params(cx, cy, hw, hh, kind, H, W):
    """Per shape, what :func:`_row_runs` needs, stacked on a new first dim: ``1 / (H hh)``,
    ``(0.5 / H - cy) / hh`` (so that ``ry a + b = ((ry + 0.5) / H - cy) / hh`` on pixel row
    ``ry``), ``hw W``, ``cx W - 0.5`` (the centre in pixel units), is-ring, is-rectangle."""
    return torch.stack([1 / (H * hh), (0.5 / H - cy) / hh, hw * W, cx * W - 0.5,
                        (kind == _SHAPE_RING).to(cx.dtype), (kind == _SHAPE_RECT).to(cx.dtype)])


def _row_runs(ry, a, b, hw, c, ring, rect):
    """Per shape and pixel row ``ry`` (float): the columns the shape covers, as ``[lo, hi)``
    less a hole ``[hole_lo, hole_hi)`` (empty except for rings), four float tensors.

    With ``e = ((y - cy) / hh)^2`` on the row, a pixel x is covered when
    ``hin <= |(x + 0.5) / W - cx| < hout``: rectangles have ``hout = hw`` on rows with
    e < 1, ellipses ``hw sqrt(1 - e)``, rings are ellipses less an inner ellipse
    ``hin = hw sqrt(0.2 - e)``. In pixel units, with ``c = cx W - 0.5``, that is
    ``c - hout W < x < c + hout W`` outside ``|x - c| < hin W``. The arguments are the
    rows of :func:`_shape_params`.
    """
    e = torch.addcmul(b, ry, a).square_()
    t = (1 - e).clamp_(min=0)
    hout = t.sqrt()
    hout = torch.lerp(hout, hout.ceil(), rect).mul_(hw)                 # rectangles: 1 where e < 1
    hin = (t - 0.8).clamp_(min=0).sqrt_().mul_(ring).mul_(hw)         # sqrt(0.2 - e), rings only
    return (c - hout).floor_().add_(1), (c + hout).ceil_(), (c - hin).floor_().add_(1), (c + hin).ceil_()


def _paint_dense(slot, shapes, H, W):
    """Reference painter: every shape tested at every pixel (O(B*N*H*W)); used by the tests."""
    cls, cx, cy, hw, hh, kind, ocol, present, order, rank = shapes
    dev = slot.device
    ry = torch.arange(H, device=dev, dtype=torch.float32)
    params = _shape_params(cx, cy, hw, hh, kind, H, W)[..., None]                      # [6,B,N,1]
    lo, hi, hole_lo, hole_hi = (t[..., None] for t in _row_runs(ry, *params))          # [B,N,H,1]
    x = torch.arange(W, device=dev)
    inside = (x >= lo) & (x < hi) & ~((x >= hole_lo) & (x < hole_hi))     # [B,N,H,W]
    inside &= present[..., None, None]
    top = (inside.to(torch.uint8) * (rank + _N_BG - 1).to(torch.uint8)[..., None, None]).amax(dim=1)
    return torch.maximum(slot, top)


def _paint(slot, shapes, H, W):
    """Painter's algorithm, vectorized: the nearest covering shape wins each pixel (in place).

    Only the rows of each present shape's bounding box are rasterized, each on a run of
    pixels as wide as the box (rounded up to a power of two, so that runs of similar width
    share one tensor). A row's covered columns are written as events (+slot where its run
    starts, -slot where it ends, the other way round for a ring's hole) and summed along
    the run; the slots are merged into the map with a scatter-max. Equals
    :func:`_paint_dense` at a small fraction of the cost.
    """
    _, cx, cy, hw, hh, kind, _, present, _, rank = shapes
    bi, ni = present.nonzero(as_tuple=True)
    if bi.numel() == 0:
        return slot
    dev = slot.device
    f = torch.stack([cx, cy, hw, hh], dim=-1)[bi, ni]                            # [M,4]
    kind, val = kind[bi, ni], (rank[bi, ni] + _N_BG - 1).to(torch.uint8)
    # pixels p whose centre (p + 0.5) / size can lie inside the box, one to spare, in the image
    size = f.new_tensor([W, H])
    lo = (torch.floor((f[:, :2] - f[:, 2:]) * size - 0.5) - 1).clamp(min=0)
    hi = torch.minimum((torch.ceil((f[:, :2] + f[:, 2:]) * size - 0.5) + 1).clamp(min=0), size - 1)
    lo = torch.minimum(lo, hi)
    lw = torch.ceil(torch.log2(hi[:, 0] - lo[:, 0] + 1)).long()
    lw, by_width = torch.sort(lw, stable=True)
    run_w = (1 << lw).clamp(max=W)
    bi, f, kind, val, lo, hi = (t[by_width] for t in (bi, f, kind, val, lo, hi))
    # runs start where a window of the shape's run width fits inside the image
    xw = torch.minimum(lo[:, 0], W - run_w)
    kh = (hi[:, 1] - lo[:, 1]).long() + 1
    # per shape: the row parameters, the run's window, and where its first row's run starts
    params = torch.cat([_shape_params(*f.unbind(1), kind, H, W), xw[None], run_w[None].to(xw.dtype)])   # [8,M]
    first = torch.cumsum(kh, 0) - kh
    ints = torch.stack([lo[:, 1].long() - first, bi * (H * W) + xw.long()])             # [2,M]
    # one entry per (shape, row of its box), grouped by run width
    shape = torch.repeat_interleave(kh)
    P, I = params.index_select(1, shape), ints.index_select(1, shape)
    ry = torch.arange(shape.numel(), device=dev).add_(I[0])
    bounds = torch.stack(_row_runs(ry.to(P.dtype), *P[:6])).sub_(P[6]).clamp_(min=0)  # [4,R], relative to the run
    bounds = torch.minimum(bounds, P[7])
    bounds[1::2] = torch.maximum(bounds[1::2], bounds[0::2])           # empty runs: hi = lo
    bounds = bounds.t().long()
    v = val.index_select(0, shape)
    nv = v.neg()
    events = torch.stack([v, nv, nv, v], dim=1)                        # uint8: -v wraps to 256 - v
    row_base = ry.mul_(W).add_(I[1])
    widths, n_shapes = torch.unique_consecutive(lw, return_counts=True)
    n_rows = torch.zeros_like(widths).index_add_(0, torch.repeat_interleave(
        torch.arange(widths.numel(), device=dev), n_shapes), kh)
    canvas = slot.view(-1)
    start = 0
    for l, n in zip(widths.tolist(), n_rows.tolist()):
        r = slice(start, start + n)
        start += n
        run = min(1 << l, W)
        acc = torch.zeros(n, run + 1, dtype=torch.uint8, device=dev)
        acc.scatter_add_(1, bounds[r], events[r])
        values = acc[:, :run].cumsum(1, dtype=torch.uint8)                       # the slot where covered, else 0
        flat = row_base[r, None] + torch.arange(run, device=dev)
        canvas.scatter_reduce_(0, flat.view(-1), values.reshape(-1), reduce="amax")
    return slot


def _objects(spec, R, B, yh, xv, curve, road_w, side_w, aspect, dev):
    """Groups of object parts; each group holds class, depth key, centre, half sizes, kind and
    colour of ``n`` shapes per image, as [B,n] tensors (absent shapes sit at x = -10)."""
    pal = torch.tensor(spec.palette, dtype=torch.float32, device=dev)
    parts: list[tuple] = []
    s = spec.object_scale

    def ground(n, lo=0.08, hi=1.0):
        tt = _lerp(lo, hi, R(n))
        return tt, yh[:, None] + tt * (1 - yh[:, None])

    def street_x(tt):
        return xv[:, None] + curve[:, None] * (1 - tt) ** 2

    def present(kind):
        n = _MAX[kind]
        return R(n) < min(spec.counts.get(kind, _DEFAULT_COUNTS[kind]) / n, 1.0)

    def colour(c, n, jitter):
        return (pal[c].view(1, 1, 3) + (R(n * 3).view(B, n, 3) - 0.5) * 2 * jitter).clamp(0, 1)

    def add(c, depth, cx, cy, hw, hh, kind, col, on):
        n = depth.shape[1]
        far = torch.full_like(cx, -10.0)
        parts.append((torch.full((B, n), c, dtype=torch.int64, device=dev), depth,
                      torch.where(on, cx, far), cy, hw.clamp(min=1e-4), hh.clamp(min=1e-4),
                      torch.as_tensor(kind, dtype=torch.int64, device=dev).expand(B, n), col))

    # cars on the road: body + cabin
    n = _MAX["car"]
    on = present("car")
    tt, yb = ground(n, 0.1, 1.0)
    lane = _lerp(-0.75, 0.75, R(n))
    w = 0.55 * road_w[:, None] * tt * s * _lerp(0.8, 1.2, R(n))
    hgt = w * aspect * _lerp(0.45, 0.6, R(n))
    x = street_x(tt) + lane * road_w[:, None] * tt
    car_col = torch.where(R(n)[..., None] < 0.5, colour(CAR, n, 0.08), R(n * 3).view(B, n, 3) * 0.8 + 0.1)
    add(CAR, yb, x, yb - hgt / 2, w / 2, hgt / 2, _SHAPE_RECT, car_col, on)
    add(CAR, yb + 1e-4, x, yb - hgt * 1.25, w * 0.33, hgt * 0.3, _SHAPE_RECT, car_col * 0.8, on)

    # people on the sidewalks: body + head
    n = _MAX["person"]
    on = present("person")
    tt, yb = ground(n, 0.25, 1.0)
    sd = torch.where(R(n) < 0.5, -1.0, 1.0)
    x = street_x(tt) + sd * road_w[:, None] * tt * (1 + side_w[:, None] * _lerp(0.2, 0.8, R(n)))
    hgt = 0.45 * tt * s * _lerp(0.85, 1.15, R(n))
    pc = colour(PERSON, n, 0.15)
    add(PERSON, yb, x, yb - hgt * 0.42, hgt * 0.14 / aspect, hgt * 0.42, _SHAPE_ELLIPSE, pc, on)
    add(PERSON, yb + 1e-4, x, yb - hgt * 0.9, hgt * 0.09 / aspect, hgt * 0.09, _SHAPE_ELLIPSE, pc * 0.8, on)

    # bicycles on the sidewalk edge: two wheels (rings) and a frame
    n = _MAX["bicycle"]
    on = present("bicycle")
    tt, yb = ground(n, 0.3, 1.0)
    sd = torch.where(R(n) < 0.5, -1.0, 1.0)
    x = street_x(tt) + sd * road_w[:, None] * tt * (1 + side_w[:, None] * 0.15)
    r = 0.095 * tt * s
    bc = colour(BICYCLE, n, 0.1)
    for off in (-1.1, 1.1):
        add(BICYCLE, yb, x + off * r / aspect, yb - r, r / aspect, r, _SHAPE_RING, bc, on)
    add(BICYCLE, yb + 1e-4, x, yb - r * 1.6, 1.2 * r / aspect, r * 0.18, _SHAPE_RECT, bc, on)

    # poles at the outer sidewalk edge, some with a sign
    n = _MAX["pole"]
    on = present("pole")
    tt, yb = ground(n, 0.25, 1.0)
    sd = torch.where(R(n) < 0.5, -1.0, 1.0)
    x = street_x(tt) + sd * road_w[:, None] * tt * (1 + side_w[:, None] * 0.9)
    hgt = 0.9 * tt * s
    pw = (0.008 + 0.010 * tt) * s
    add(POLE, yb, x, yb - hgt / 2, pw, hgt / 2, _SHAPE_RECT, colour(POLE, n, 0.08), on)
    sign_on = on & (R(n) < min(spec.counts.get("sign", 0.5) / max(spec.counts.get("pole", 2.5), 1e-6), 1.0) * 2)
    sz = 0.08 * tt * s
    add(SIGN, yb + 1e-4, x + sd * sz * 0.3 / aspect, yb - hgt + sz, sz / aspect, sz,
        torch.where(R(n) < 0.5, _SHAPE_RECT, _SHAPE_ELLIPSE),
        colour(SIGN, n, 0.08), sign_on)

    # trees: trunk + canopy, beyond the sidewalk
    n = _MAX["tree"]
    on = present("tree")
    tt, yb = ground(n, 0.05, 0.9)
    sd = torch.where(R(n) < 0.5, -1.0, 1.0)
    x = street_x(tt) + sd * road_w[:, None] * tt * (1 + side_w[:, None] * _lerp(1.0, 1.6, R(n)))
    hgt = 0.7 * tt * s * _lerp(0.8, 1.3, R(n))
    vc = colour(VEG, n, 0.1)
    add(VEG, yb, x, yb - hgt * 0.3, 0.01 * tt / aspect + 1e-3, hgt * 0.3, _SHAPE_RECT, vc * 0.6, on)
    cr = hgt * _lerp(0.3, 0.45, R(n))
    add(VEG, yb + 1e-4, x, yb - hgt * 0.6 - cr * 0.5, cr / aspect * 1.3, cr, _SHAPE_ELLIPSE, vc, on)

    return parts
