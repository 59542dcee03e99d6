"""Real-dataset readers on small fake trees in the official layouts and encodings."""
from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from kit.data.labels import (
    CITYSCAPES_CLASSES, CITYSCAPES_ID_TO_TRAIN_ID, SYNTHIA_13, SYNTHIA_16, SYNTHIA_ID_TO_TRAIN_ID,
    IdMapping, UnknownLabelIdError, apply_lut, make_lut, remap_to_subset, subset_classes,
)
from kit.data.folders import FolderSegmentation
from kit.data.real import GTA5, Cityscapes, Synthia, decode_png, read_synthia_label
from kit.data.transforms import RESIZE_PRESETS
from kit.data.transforms import Compose, Resize

H, W = 16, 32
# Cityscapes label ids painted in vertical stripes (one id per 2 columns) -> expected train id.
CS_IDS = [7, 26, 0, 33, 22, 24, 12, 14, 11, 8, 1, 255, 17, 19, 21, 23]
CS_TRAIN = [0, 13, 255, 18, 9, 11, 3, 255, 2, 1, 255, 255, 5, 6, 8, 10]


def stripes(ids, h=H, w=W, dtype=np.uint8):
    cols = np.repeat(np.asarray(ids), w // len(ids))
    return np.broadcast_to(cols, (h, w)).astype(dtype).copy()


def rgb(seed, h=H, w=W):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def save(arr, path, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode).save(path)
    return path


def save_palette(ids, path):
    """GTA5 stores its label ids as palette indices of a 'P' PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(ids.astype(np.uint8), "P")
    im.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
    im.save(path)
    return path


def png16(arr, path, filters=(0, 1, 2, 3, 4)):
    """A 16-bit RGB/RGBA/gray PNG written byte by byte (Pillow cannot write 16-bit RGB),
    cycling through all five PNG filter types so the reader's unfiltering is exercised."""
    arr = np.asarray(arr, np.uint16)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    h, w, c = arr.shape
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    data = arr.astype(">u2").view(np.uint8).reshape(h, -1).astype(np.int32)
    bpp = 2 * c
    rows, prev = [], np.zeros(data.shape[1], np.int32)
    for r in range(h):
        x = data[r]
        a = np.concatenate([np.zeros(bpp, np.int32), x[:-bpp]])
        up_left = np.concatenate([np.zeros(bpp, np.int32), prev[:-bpp]])
        p = a + prev - up_left
        pa, pb, pc = abs(p - a), abs(p - prev), abs(p - up_left)
        paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, prev, up_left))
        f = filters[r % len(filters)]
        pred = [np.zeros_like(x), a, prev, (a + prev) // 2, paeth][f]
        rows.append(bytes([f]) + ((x - pred) & 255).astype(np.uint8).tobytes())
        prev = x

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n"
                     + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"".join(rows)))
                     + chunk(b"IEND", b""))
    return path


# --------------------------------------------------------------------------- labels


def test_lut_and_mapping_tables():
    lut = make_lut(CITYSCAPES_ID_TO_TRAIN_ID)
    assert lut.dtype == np.int64 and lut.shape == (256,)
    assert make_lut(CITYSCAPES_ID_TO_TRAIN_ID, dtype="uint8").dtype == np.uint8
    assert isinstance(make_lut(None, 4, as_tensor=True), torch.Tensor)
    out = apply_lut(np.array(CS_IDS, np.uint8), lut)
    assert out.tolist() == [CITYSCAPES_ID_TO_TRAIN_ID.get(i, 255) for i in CS_IDS]
    t = apply_lut(torch.tensor([7, 26, 0]), torch.from_numpy(lut))
    assert t.tolist() == [0, 13, 255] and t.dtype == torch.int64
    with pytest.raises(ValueError, match="300"):
        apply_lut(np.array([300]), lut)
    # SYNTHIA: 19 mapped ids, each name matching its Cityscapes class.
    names = {1: "sky", 2: "building", 3: "road", 4: "sidewalk", 5: "fence", 6: "vegetation",
             7: "pole", 8: "car", 9: "traffic sign", 10: "person", 11: "bicycle",
             12: "motorcycle", 15: "traffic light", 16: "terrain", 17: "rider", 18: "truck",
             19: "bus", 20: "train", 21: "wall"}
    assert {k: CITYSCAPES_CLASSES[v] for k, v in SYNTHIA_ID_TO_TRAIN_ID.items()} == names
    assert len(SYNTHIA_16) == 16 and len(SYNTHIA_13) == 13
    assert not {9, 14, 16} & set(SYNTHIA_16) and not {3, 4, 5} & set(SYNTHIA_13)
    assert subset_classes(SYNTHIA_13)[:4] == ("road", "sidewalk", "building", "traffic light")
    lab = torch.tensor([[0, 3, 9, 13], [18, 255, 10, 5]])
    assert remap_to_subset(lab, SYNTHIA_16).tolist() == [[0, 3, 255, 12], [15, 255, 9, 5]]
    assert remap_to_subset(lab.numpy(), SYNTHIA_13).tolist() == [[0, 255, 255, 9], [12, 255, 6, 255]]


def test_id_mapping_rejects_unknown_ids():
    m = IdMapping({1: 0, 2: None}, frozenset({0}))
    assert m(np.array([0, 1, 2], np.uint8)).tolist() == [255, 0, 255]
    with pytest.raises(UnknownLabelIdError, match=r"f\.png.*\[7\]"):
        m(np.array([1, 7], np.uint8), source="f.png")


# --------------------------------------------------------------------------- Cityscapes


def make_cityscapes(root, split="train", cities=("aachen", "bochum"), n=2, ids=CS_IDS):
    for c, city in enumerate(cities):
        for k in range(n):
            name = f"{city}_{k:06d}_000019"
            save(rgb(10 * c + k), root / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png")
            gt = root / "gtFine" / split / city
            save(stripes(ids), gt / f"{name}_gtFine_labelIds.png")
            # The other gtFine files of the official layout must not confuse the reader.
            save(rgb(99), gt / f"{name}_gtFine_color.png")
            save(stripes(ids, dtype=np.uint16) * 1000, gt / f"{name}_gtFine_instanceIds.png")
            (gt / f"{name}_gtFine_polygons.json").write_text("{}")
    return root


def test_cityscapes_reads_and_maps(tmp_path):
    root = make_cityscapes(tmp_path / "cs")
    ds = Cityscapes(root, "train")
    assert len(ds) == 4 and ds.num_classes == 19 and ds.classes == CITYSCAPES_CLASSES
    assert [p.name for p in ds.image_paths] == sorted(p.name for p in ds.image_paths)
    assert ds.image_paths[0].parent.name == "aachen" and ds.image_paths[-1].parent.name == "bochum"
    img, lbl = ds[0]
    assert img.dtype == torch.float32 and img.shape == (3, H, W)
    assert lbl.dtype == torch.int64 and lbl.shape == (H, W)
    assert torch.equal(img, torch.from_numpy(rgb(0)).permute(2, 0, 1).float() / 255)
    assert lbl[0].tolist() == np.repeat(CS_TRAIN, 2).tolist()
    assert (lbl[:, 0] == 0).all() and (lbl[:, 2] == 13).all() and (lbl[:, 4] == 255).all()
    assert len(Cityscapes(root, "train", max_items=3)) == 3


@pytest.mark.parametrize("classes, expected", [
    # ids:  7 road, 26 car, 22 terrain, 24 person, 12 wall, 17 pole, 23 sky
    (16, {7: 0, 26: 12, 22: 255, 24: 10, 12: 3, 17: 5, 23: 9}),
    (13, {7: 0, 26: 9, 22: 255, 24: 7, 12: 255, 17: 255, 23: 6}),
])
def test_cityscapes_class_subsets(tmp_path, classes, expected):
    ds = Cityscapes(make_cityscapes(tmp_path / "cs", n=1), "train", classes=classes)
    assert ds.num_classes == classes == len(ds.classes)
    row = ds[0][1][0].tolist()
    for raw, want in expected.items():
        assert row[2 * CS_IDS.index(raw)] == want, raw
    assert max(v for v in row if v != 255) < classes


def test_cityscapes_with_transform(tmp_path):
    ds = Cityscapes(make_cityscapes(tmp_path / "cs", n=1), "train", transform=Resize((8, 16)))
    img, lbl = ds[1]
    assert img.shape == (3, 8, 16) and lbl.shape == (8, 16)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=2)))
    assert batch[0].shape == (2, 3, 8, 16) and batch[1].dtype == torch.int64


def test_cityscapes_errors(tmp_path):
    root = make_cityscapes(tmp_path / "cs")
    with pytest.raises(FileNotFoundError, match=r"(?s)leftImg8bit/val.*Expected layout.*gtFine"):
        Cityscapes(root, "val")
    with pytest.raises(ValueError, match="split"):
        Cityscapes(root, "training")
    with pytest.raises(ValueError, match="classes"):
        Cityscapes(root, classes=11)
    # empty split
    (root / "leftImg8bit" / "test" / "berlin").mkdir(parents=True)
    (root / "gtFine" / "test" / "berlin").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no <city>"):
        Cityscapes(root, "test")
    # image without its label: the first missing one is named
    (root / "gtFine/train/bochum/bochum_000000_000019_gtFine_labelIds.png").unlink()
    with pytest.raises(FileNotFoundError, match="bochum_000000_000019_leftImg8bit.png has no label"):
        Cityscapes(root, "train")


def test_cityscapes_bad_label_contents(tmp_path):
    root = make_cityscapes(tmp_path / "cs")
    gt = root / "gtFine/train/aachen"
    save(stripes(CS_IDS, h=8), gt / "aachen_000000_000019_gtFine_labelIds.png")
    save(stripes([7, 200] * 8), gt / "aachen_000001_000019_gtFine_labelIds.png")
    save(rgb(5), root / "gtFine/train/bochum/bochum_000000_000019_gtFine_labelIds.png")
    ds = Cityscapes(root, "train")
    with pytest.raises(ValueError, match=r"size mismatch.*aachen_000000_000019_gtFine_labelIds"):
        ds[0]
    with pytest.raises(ValueError, match=r"aachen_000001_000019_gtFine_labelIds.png.*\[200\]"):
        ds[1]
    with pytest.raises(ValueError, match="single-channel"):
        ds[2]
    assert ds[3][1].shape == (H, W)


# --------------------------------------------------------------------------- GTA5


def make_gta5(root, n=4):
    for k in range(1, n + 1):
        save(rgb(k), root / "images" / f"{k:05d}.png")
        save_palette(stripes(CS_IDS), root / "labels" / f"{k:05d}.png")
    return root


def test_gta5_all_and_splits(tmp_path):
    root = make_gta5(tmp_path / "gta")
    ds = GTA5(root)
    assert len(ds) == 4 and ds.num_classes == 19
    assert [p.name for p in ds.image_paths] == ["00001.png", "00002.png", "00003.png", "00004.png"]
    img, lbl = ds[2]
    assert img.shape == (3, H, W) and lbl.dtype == torch.int64
    assert lbl[0].tolist() == np.repeat(CS_TRAIN, 2).tolist()  # palette indices are the ids
    (root / "train.txt").write_text("00003.png\n00001\n\n# comment\n")
    assert [p.name for p in GTA5(root, "train").image_paths] == ["00001.png", "00003.png"]
    lst = tmp_path / "mine.txt"
    lst.write_text("images/00004.png\n")
    assert [p.name for p in GTA5(root, "val", list_file=lst).image_paths] == ["00004.png"]


def test_gta5_errors(tmp_path):
    root = make_gta5(tmp_path / "gta")
    with pytest.raises(FileNotFoundError, match=r"(?s)val\.txt.*Expected layout.*labels/<n>\.png"):
        GTA5(root, "val")
    (root / "val.txt").write_text("00009\n")
    with pytest.raises(FileNotFoundError, match="00009.png"):
        GTA5(root, "val")
    with pytest.raises(FileNotFoundError, match="labels"):
        GTA5(tmp_path / "nowhere")
    (root / "labels" / "00002.png").unlink()
    with pytest.raises(FileNotFoundError, match="00002.png has no label"):
        GTA5(root)
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "labels").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        GTA5(empty)


# --------------------------------------------------------------------------- SYNTHIA

# SYNTHIA class ids in stripes: 3 road, 10 pedestrian, 22 lanemarking, 21 wall, 8 car,
# 16 terrain, 0 void, 11 bicycle
SYN_IDS = [3, 10, 22, 21, 8, 16, 0, 11]
SYN_16 = [0, 10, 255, 3, 12, 255, 255, 15]
SYN_13 = [0, 7, 255, 255, 9, 255, 255, 12]


def make_synthia(root, ids=SYN_IDS):
    cls = stripes(ids, dtype=np.uint16)
    inst = np.arange(H * W, dtype=np.uint16).reshape(H, W) + 1000  # instance ids > 255
    png16(np.stack([cls, inst, np.zeros_like(cls)], -1), root / "GT/LABELS/0000000.png")
    png16(np.stack([cls, inst, cls, np.full_like(cls, 65535)], -1), root / "GT/LABELS/0000001.png")
    save(cls, root / "GT/LABELS/0000002.png")  # single-channel 16-bit (Pillow mode I;16)
    for k in range(3):
        save(rgb(k), root / "RGB" / f"{k:07d}.png")
    return root


def test_png_decoder_matches_pillow_and_keeps_16_bits(tmp_path):
    a = rgb(3, 13, 21)
    a[:, :, 1] = np.add.outer(np.arange(13), np.arange(21)).astype(np.uint8)
    save(a, tmp_path / "a.png")  # Pillow chooses its own filters (Sub/Up/Paeth)
    assert np.array_equal(decode_png(tmp_path / "a.png"), a)
    b = np.random.default_rng(0).integers(0, 65536, (9, 11, 4)).astype(np.uint16)
    png16(b, tmp_path / "b.png")
    assert np.array_equal(decode_png(tmp_path / "b.png"), b)
    assert np.array_equal(decode_png(tmp_path / "b.png", channels=[2])[:, :, 0], b[:, :, 2])
    for filters in [(0,), (1,), (2,), (3,), (4,)]:
        png16(b[:, :, :3], tmp_path / "c.png", filters)
        assert np.array_equal(read_synthia_label(tmp_path / "c.png"), b[:, :, 0]), filters


def test_synthia_label_written_by_opencv_and_gray_alpha(tmp_path):
    """A label saved by OpenCV (BGRA in memory, RGBA on disk) gives its R channel; a
    16-bit gray+alpha file gives its gray channel; broken files raise ValueError."""
    cv2 = pytest.importorskip("cv2")
    rgba = np.random.default_rng(1).integers(0, 65536, (7, 9, 4)).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "cv.png"), rgba[:, :, [2, 1, 0, 3]])
    assert np.array_equal(decode_png(tmp_path / "cv.png"), rgba)
    assert np.array_equal(read_synthia_label(tmp_path / "cv.png"), rgba[:, :, 0])
    assert np.array_equal(decode_png(tmp_path / "cv.png", channels=[3, 0]), rgba[:, :, [3, 0]])
    png16(rgba[:, :, :2], tmp_path / "la.png")  # color type 4: gray + alpha
    assert np.array_equal(read_synthia_label(tmp_path / "la.png"), rgba[:, :, 0])
    with pytest.raises(ValueError, match=r"has 4 channel\(s\), asked for \[4\]"):
        decode_png(tmp_path / "cv.png", channels=[4])
    data = (tmp_path / "cv.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[:40])  # header intact, pixel data cut
    with pytest.raises(ValueError, match="cut.png"):
        read_synthia_label(tmp_path / "cut.png")
    (tmp_path / "junk.png").write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match="junk.png"):
        decode_png(tmp_path / "junk.png")


def test_synthia_reads_16bit_labels(tmp_path):
    root = make_synthia(tmp_path / "syn")
    for k in range(3):  # the three encodings give the same class ids
        lab = read_synthia_label(root / f"GT/LABELS/{k:07d}.png")
        assert lab.dtype == np.uint16 and lab[0, ::4].tolist() == SYN_IDS
    ds = Synthia(root)
    assert len(ds) == 3 and ds.num_classes == 16 and ds.classes == subset_classes(SYNTHIA_16)
    for k in range(3):
        img, lbl = ds[k]
        assert img.shape == (3, H, W) and lbl.dtype == torch.int64
        assert lbl[0, ::4].tolist() == SYN_16
    assert Synthia(root, classes=13)[0][1][5, ::4].tolist() == SYN_13


def test_synthia_errors(tmp_path):
    root = make_synthia(tmp_path / "syn")
    png16(stripes([3, 23], dtype=np.uint16), root / "GT/LABELS/0000000.png")
    save(stripes([3, 300], dtype=np.uint16), root / "GT/LABELS/0000001.png")
    ds = Synthia(root, max_items=2)
    assert len(ds) == 2
    with pytest.raises(ValueError, match=r"0000000.png.*\[23\]"):
        ds[0]
    with pytest.raises(ValueError, match=r"0000001.png.*\[300\]"):  # 16-bit value survived
        ds[1]
    with pytest.raises(ValueError, match="16 or 13"):
        Synthia(root, classes=19)
    with pytest.raises(FileNotFoundError, match=r"(?s)nothing/RGB.*Expected layout.*GT/LABELS"):
        Synthia(tmp_path / "nothing")
    (root / "GT/LABELS/0000002.png").unlink()
    with pytest.raises(FileNotFoundError, match="0000002.png has no label"):
        Synthia(root)


# --------------------------------------------------------------------------- folders


def test_folder_identity_bdd_style(tmp_path):
    for k in range(3):
        save(rgb(k), tmp_path / "img" / f"b{k}.jpg")
        save(stripes([0, 5, 18, 255]), tmp_path / "lbl" / f"b{k}_train_id.png")
    ds = FolderSegmentation(tmp_path / "img", tmp_path / "lbl", image_suffix=".jpg",
                            label_strip="_train_id")
    assert len(ds) == 3 and ds.num_classes == 19
    img, lbl = ds[0]
    assert img.shape == (3, H, W) and lbl[0, ::8].tolist() == [0, 5, 18, 255]
    small = FolderSegmentation(tmp_path / "img", tmp_path / "lbl", classes=("a", "b"),
                               image_suffix=".jpg", label_stem_fn=lambda s: s.split("_")[0])
    with pytest.raises(ValueError, match=r"b0_train_id.png.*\[5, 18\]"):
        small[0]


def test_folder_label_maps(tmp_path):
    save(rgb(0), tmp_path / "img" / "0001TP_000010.png")
    road, car = (128, 64, 128), (64, 0, 128)
    colors = np.zeros((H, W, 3), np.uint8)
    colors[:, :16] = road
    colors[:, 16:] = car
    save(colors, tmp_path / "lbl" / "0001TP_000010_L.png")
    ds = FolderSegmentation(tmp_path / "img", tmp_path / "lbl", {road: 0, car: 1},
                            classes=("road", "car"), label_strip="_L")
    assert ds[0][1][:, ::16].unique().tolist() == [0, 1]
    with pytest.raises(ValueError, match="unknown label color"):
        FolderSegmentation(tmp_path / "img", tmp_path / "lbl", {road: 0},
                           classes=("road",), label_strip="_L")[0]
    save(stripes([1, 2, 9, 0]), tmp_path / "ids" / "0001TP_000010.png")
    ds = FolderSegmentation(tmp_path / "img", tmp_path / "ids", {1: 0, 2: 1, 9: None},
                            classes=("x", "y"), void_ids=(0,))
    assert ds[0][1][0, ::8].tolist() == [0, 1, 255, 255]
    with pytest.raises(ValueError, match="outside"):
        FolderSegmentation(tmp_path / "img", tmp_path / "ids", {1: 5}, classes=("x",))
    with pytest.raises(FileNotFoundError, match="0001TP_000010.png has no label"):
        FolderSegmentation(tmp_path / "img", tmp_path / "lbl")  # forgot label_strip="_L"


def test_resize_presets():
    assert RESIZE_PRESETS["gta5_source"] == (720, 1280)
    assert RESIZE_PRESETS["cityscapes_target"] == (512, 1024)
    assert RESIZE_PRESETS["cityscapes_target_ripu"] == (640, 1280)
    assert RESIZE_PRESETS["cityscapes_eval"] == (1024, 2048)
    assert Compose([Resize("cityscapes_target")]).transforms[0].size == (512, 1024)


def test_readers_pickle_for_dataloader_workers(tmp_path):
    import pickle

    ds = Synthia(make_synthia(tmp_path / "syn"), classes=13)
    clone = pickle.loads(pickle.dumps(ds))
    assert torch.equal(clone[1][1], ds[1][1]) and clone.classes == ds.classes


def test_make_da_datasets_on_a_fake_data_root(tmp_path):
    """The paper profile's data path: GTA5 -> Cityscapes from DATA_ROOT, resized as configured,
    target val labels kept at full size; a missing DATA_ROOT is a clear error."""
    from kit.config import resolve
    from kit.data import make_da_datasets

    make_gta5(tmp_path / "gta5")
    make_cityscapes(tmp_path / "cityscapes", "train")
    make_cityscapes(tmp_path / "cityscapes", "val")
    cfg = resolve("paper", data_root=str(tmp_path), size=[16, 24], source_size=[20, 30])
    ds = make_da_datasets(cfg)
    x, y = ds["source_train"][0]
    assert x.shape == (3, 20, 30) and y.shape == (20, 30)
    x, y = ds["target_train"][0]
    assert x.shape == (3, 16, 24) and y.shape == (16, 24)
    x, y = ds["target_val"][0]
    assert x.shape == (3, 16, 24) and y.shape == (H, W)          # labels at full resolution
    assert ds["source_val"] is None and ds["target_train"].num_classes == 19
    with pytest.raises(FileNotFoundError, match="expected"):
        make_da_datasets(resolve("paper", data_root=str(tmp_path / "nope")))
