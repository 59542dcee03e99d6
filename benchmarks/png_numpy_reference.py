"""The numpy + zlib PNG decoder the kit used for SYNTHIA labels until it switched to OpenCV.

Kept here only as the baseline of ``bench_labels.py`` (speed and bit-exact equality of
the two decoders on the same files); the kit itself no longer uses it.
"""
from __future__ import annotations

import struct
import zlib
from typing import Sequence

import numpy as np

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # color type -> samples per pixel

def decode_png(path, channels: Sequence[int] | None = None) -> np.ndarray:
    """Decode an 8- or 16-bit, non-palette, non-interlaced PNG with numpy + zlib.

    Returns ``[H, W, C]`` uint8 or uint16 with the full sample values (Pillow cannot
    do this for 16-bit RGB/RGBA PNGs: it keeps only the high byte of each sample).
    ``channels`` selects samples (e.g. ``[0]``); only the bytes of those samples are
    unfiltered, which makes the decode of one channel several times cheaper.

    Rows filtered with None/Sub/Up are undone row by row with vectorized numpy
    (Sub is a cumulative sum mod 256). Average and Paeth depend on the already decoded
    left neighbour, so when they occur the image is undone along anti-diagonals
    (a wavefront: every pixel on one diagonal depends only on the two previous
    diagonals), which is vectorized over up to ``min(H, W)`` pixels per step.
    """
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != _PNG_SIGNATURE:
        raise ValueError(f"{path}: not a PNG file")
    pos, idat, header = 8, [], None
    while pos + 8 <= len(data):
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if ctype == b"IHDR":
            header = struct.unpack(">IIBBBBB", body[:13])
        elif ctype == b"IDAT":
            idat.append(body)
        elif ctype == b"IEND":
            break
        pos += 12 + length
    if header is None or not idat:
        raise ValueError(f"{path}: truncated PNG (no IHDR or IDAT chunk)")
    width, height, depth, color_type, _, _, interlace = header
    if color_type not in _PNG_CHANNELS or depth not in (8, 16) or interlace:
        raise ValueError(f"{path}: decode_png handles 8/16-bit non-palette non-interlaced "
                         f"PNGs; got bit depth {depth}, color type {color_type}, "
                         f"interlace {interlace}")
    n_ch = _PNG_CHANNELS[color_type]
    bps = depth // 8  # bytes per sample
    bpp = n_ch * bps  # bytes per pixel: the filters' "left neighbour" distance
    try:
        raw = zlib.decompress(b"".join(idat))
    except zlib.error as e:
        raise ValueError(f"{path}: corrupt PNG data ({e})") from None
    stride = width * bpp
    if len(raw) < height * (stride + 1):
        raise ValueError(f"{path}: truncated PNG data")
    rows = np.frombuffer(raw, np.uint8, count=height * (stride + 1)).reshape(height, stride + 1)
    ftypes = rows[:, 0]
    if ftypes.max(initial=0) > 4:
        raise ValueError(f"{path}: invalid PNG filter type {int(ftypes.max())}")
    chans = list(range(n_ch)) if channels is None else [int(c) for c in channels]
    if any(not 0 <= c < n_ch for c in chans):
        raise ValueError(f"{path}: has {n_ch} channel(s), asked for {chans}")
    lanes = [c * bps + k for c in chans for k in range(bps)]
    filt = rows[:, 1:].reshape(height, width, bpp)[:, :, lanes]  # bytes are independent per lane
    if ftypes.max(initial=0) <= 2:
        out = _unfilter_rows(filt, ftypes)
    else:
        out = _unfilter_wavefront(filt, ftypes)
    if bps == 2:
        out = out.astype(np.uint16)
        out = (out[:, :, 0::2] << 8) | out[:, :, 1::2]  # big-endian samples
    return out


def _unfilter_rows(filt: np.ndarray, ftypes: np.ndarray) -> np.ndarray:
    """Undo None (0), Sub (1) and Up (2) filters: [H, W, L] uint8 (uint8 math wraps mod 256)."""
    out = np.empty_like(filt)
    prev = np.zeros_like(filt[0])
    for r, f in enumerate(ftypes.tolist()):
        if f == 0:
            out[r] = filt[r]
        elif f == 1:
            np.cumsum(filt[r], axis=0, dtype=np.uint8, out=out[r])
        else:
            np.add(filt[r], prev, out=out[r])
        prev = out[r]
    return out


def _unfilter_wavefront(filt: np.ndarray, ftypes: np.ndarray) -> np.ndarray:
    """Undo any mix of the five PNG filters along anti-diagonals t = row + column.

    Skewed storage ``S[t + 2, r + 1] = out[r, t - r]`` turns each diagonal into one
    contiguous slice; left, up and up-left neighbours of diagonal t are slices of
    diagonals t-1, t-1 and t-2. Two leading zero diagonals and one zero row stand in
    for the image border (which PNG defines as 0).
    """
    h, w, lanes = filt.shape
    rr = np.arange(h)[:, None]
    tt = rr + np.arange(w)[None, :]
    skew_raw = np.zeros((h + w - 1, h, lanes), np.int16)
    skew_raw[tt, rr] = filt
    s = np.zeros((h + w + 1, h + 1, lanes), np.int16)
    f = ftypes.astype(np.int16)[:, None]
    is_sub, is_up, is_avg, is_paeth = (f == 1), (f == 2), (f == 3), (f == 4)
    for t in range(h + w - 1):
        r0, r1 = max(0, t - w + 1), min(h - 1, t) + 1
        a = s[t + 1, r0 + 1:r1 + 1]   # left      out[r, i-1]
        b = s[t + 1, r0:r1]           # up        out[r-1, i]
        c = s[t, r0:r1]               # up-left   out[r-1, i-1]
        pa, pb, pc = np.abs(b - c), np.abs(a - c), np.abs(a + b - 2 * c)
        paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
        pred = (is_sub[r0:r1] * a + is_up[r0:r1] * b + is_avg[r0:r1] * ((a + b) >> 1)
                + is_paeth[r0:r1] * paeth)
        s[t + 2, r0 + 1:r1 + 1] = (skew_raw[t, r0:r1] + pred) & 0xFF
    return s[tt + 2, rr + 1].astype(np.uint8)
