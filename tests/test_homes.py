"""Generic pieces live in kit.evaluation and kit.data; their old import paths still work."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch.utils.data import TensorDataset

from kit import data, engine, evaluation
from kit.data import folders, labels, mixing, wrappers
from kit.methods import cdcl, das3, ddep


def test_old_import_paths_are_the_new_objects():
    assert engine.evaluate is evaluation.evaluate and engine.predict is evaluation.predict
    assert engine.EvalResult is evaluation.EvalResult
    assert das3.class_mix is mixing.class_mix and das3.class_mix_batch is mixing.class_mix_batch
    assert das3.Unlabeled is wrappers.Unlabeled is ddep.ImagesOnly is wrappers.ImagesOnly
    assert data.Unlabeled is wrappers.Unlabeled
    assert cdcl.CAMVID_CLASSES is labels.CAMVID_CLASSES
    assert cdcl.CAMVID_TO_CITYSCAPES is labels.CAMVID_TO_CITYSCAPES


class _Fingerprinted(TensorDataset):
    fingerprint = "fp-123"
    num_classes = 5


def test_unlabeled_hides_labels_and_keeps_identity():
    ds = _Fingerprinted(torch.arange(12.0).reshape(4, 3, 1, 1), torch.zeros(4, 1, 1, dtype=torch.long))
    u = wrappers.Unlabeled(ds)
    x, i = u[3]
    assert torch.equal(x, ds[3][0]) and i.dtype == torch.int64 and int(i) == 3
    assert (len(u), u.num_classes, u.fingerprint) == (4, 5, "fp-123")
    assert wrappers.ImagesOnly(u).dataset is ds  # wrapping twice wraps once
    # a dataset without a fingerprint: its content identifies it, never a shared None
    a = wrappers.Unlabeled(TensorDataset(torch.zeros(2, 3, 1, 1))).fingerprint
    b = wrappers.Unlabeled(TensorDataset(torch.ones(2, 3, 1, 1))).fingerprint
    assert a and b and a != b


def _save(arr, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_bdd100k_and_camvid_readers_equal_the_folder_reader_cdcl_built(tmp_path):
    rng = np.random.default_rng(0)
    for k in range(2):
        _save(rng.integers(0, 255, (8, 12, 3), dtype=np.uint8), tmp_path / "bdd100k/images/val" / f"b{k}.jpg")
        _save(np.full((8, 12), 13, np.uint8), tmp_path / "bdd100k/labels/val" / f"b{k}_train_id.png")
        _save(rng.integers(0, 255, (8, 12, 3), dtype=np.uint8), tmp_path / "camvid/val" / f"c{k}.png")
        lab = np.full((8, 12), 5, np.uint8)
        lab[:, :4] = 11
        _save(lab, tmp_path / "camvid/valannot" / f"c{k}.png")
    bdd = folders.BDD100K(tmp_path / "bdd100k", "val")
    bdd_folder = folders.FolderSegmentation(tmp_path / "bdd100k/images/val", tmp_path / "bdd100k/labels/val",
                                            classes=labels.CITYSCAPES_CLASSES, image_suffix=".jpg",
                                            label_strip="_train_id")
    lm = {i: i for i in range(11)}
    lm[11] = None
    cam = folders.CamVid(tmp_path / "camvid", "val")
    cam_folder = folders.FolderSegmentation(tmp_path / "camvid/val", tmp_path / "camvid/valannot", label_map=lm,
                                            classes=labels.CAMVID_CLASSES)
    for new, old in ((bdd, bdd_folder), (cam, cam_folder)):
        assert (len(new), new.classes) == (len(old), old.classes)
        for k in range(len(new)):
            assert all(torch.equal(a, b) for a, b in zip(new[k], old[k]))
    assert int(bdd[0][1][0, 0]) == 13 and cam[0][1][0].tolist() == [255] * 4 + [5] * 8


def test_das3_generic_pieces_have_their_homes():
    from kit.data import transforms
    from kit.methods import das3_atp
    from kit.models import utils

    assert das3.strong_augment is transforms.strong_augment
    assert das3.ema_update is utils.ema_update and das3.ema_alpha_at is utils.ema_alpha_at
    assert das3.stage3_atp is das3_atp.stage3_atp and das3.atp_pseudo_labels is das3_atp.atp_pseudo_labels
    assert das3.reestimate_bn is utils.reestimate_bn and das3.make_teacher is utils.make_teacher


def test_das3_siblings_are_the_old_names():
    from kit.methods import das3_cache, das3_scan

    for name in das3_scan.__all__:
        assert getattr(das3, name) is getattr(das3_scan, name)
    for name in das3_cache.__all__:
        assert getattr(das3, name) is getattr(das3_cache, name)


def test_ddep_moved_pieces_are_the_old_names():
    from kit.data import subsets
    from kit.methods import ddep_analysis

    for mod in (subsets, ddep_analysis):
        for name in mod.__all__:
            assert getattr(ddep, name) is getattr(mod, name)


def test_split_modules_keep_their_old_import_paths():
    from kit import active, annotation, cli, notebook_runner, results, stats

    for name in ("BUDGET_ROUNDINGS", "Budget", "AnnotationState", "select_round", "image_level_select"):
        assert not hasattr(active, name) and hasattr(annotation, name), name   # one home, no shim
    for name in ("Effect", "HOLDS", "VERDICTS", "effect", "seeds_needed", "all_hold", "mean_sd"):
        assert getattr(results, name) is getattr(stats, name), name
    for name in ("CliError", "DEFAULT_PROFILE", "notebooks_dir", "list_notebooks", "find_notebook",
                 "notebook_parameters", "run_notebook"):
        assert getattr(cli, name) is getattr(notebook_runner, name), name
