"""Generic pieces live in kit.evaluation and kit.data, each method's pieces in its own modules;
a method module keeps no re-export of what moved out of it (no shims: one home per name)."""
from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import TensorDataset

from kit import data, engine, evaluation
from kit.data import folders, labels, mixing, wrappers
from kit.methods import cdcl, das3, ddep


def moved(old, new, gone=(), imported=()):
    """Names that moved from module ``old`` to their one home ``new``: ``gone`` ones are no attribute
    of ``old`` at all; ``imported`` ones ``old`` imports for its own use (so they are attributes of it),
    but it does not export them (not in ``__all__``, so not in ``from old import *``)."""
    for name in (*gone, *imported):
        assert hasattr(new, name) and name in getattr(new, "__all__", [name]), f"{name} has no home in {new.__name__}"
        assert name not in getattr(old, "__all__", ()), f"{old.__name__} still exports {name}"
    for name in gone:
        assert not hasattr(old, name), f"{old.__name__}.{name} still exists"


def test_old_import_paths_are_gone_and_the_new_homes_have_them():
    moved(engine, evaluation, gone=["evaluate", "predict", "EvalResult"])
    moved(das3, mixing, gone=["class_mix"], imported=["class_mix_batch"])
    moved(das3, wrappers, imported=["Unlabeled"])
    moved(ddep, wrappers, imported=["ImagesOnly"])
    assert wrappers.Unlabeled is wrappers.ImagesOnly and data.Unlabeled is wrappers.Unlabeled
    moved(cdcl, labels, gone=["CAMVID_CLASSES", "CAMVID_TO_CITYSCAPES"])


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

    assert not hasattr(das3, "__getattr__")        # no lazy re-exports either
    moved(das3, transforms, gone=["strong_augment"])
    moved(das3, utils, gone=["ema_update", "ema_alpha_at", "reestimate_bn"], imported=["make_teacher"])
    moved(das3, das3_atp, gone=["atp_pseudo_labels"], imported=["stage3_atp"])


def test_das3_siblings_are_the_new_homes():
    from kit.methods import das3_scan, das3_stage

    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("kit.methods.das3_cache")
    moved(das3, das3_scan, gone=["Scan", "pseudo_label_thresholds"], imported=["scan_target"])
    moved(das3, das3_stage, imported=["StageResult", "stage_engine"])
    assert not hasattr(das3, "_engine")
    for name in ("load_source_model", "load_or_run_stage", "stage_key"):   # source_parent / fit / key_of now
        assert not hasattr(das3, name), name
    for name in ("eval_record", "stage_tags", "source_parent"):           # these stay in das3
        assert name in das3.__all__ and callable(getattr(das3, name)), name


def test_ddep_moved_pieces_have_their_homes():
    from kit.data import subsets
    from kit.methods import ddep_analysis

    moved(ddep, subsets, gone=["label_fraction_sets"], imported=["RepeatTo", "label_subset"])
    moved(ddep, ddep_analysis, gone=list(ddep_analysis.__all__))
    for name in ("load_supervised_encoder", "load_denoising_pretrained", "load_or_finetune", "init_model"):
        assert not hasattr(ddep, name), name


def test_per_method_cached_training_is_gone_fit_is_the_one_runner():
    from kit import fit, methods
    from kit.methods import adaptseg, ripu, supervised

    for mod, names in ((supervised, ["load_or_train_baseline", "baseline_key", "baseline_name"]),
                       (adaptseg, ["load_or_train_adaptseg"]), (ripu, ["load_or_train_ripu"]),
                       (cdcl, ["load_or_train_cdcl", "cache_key"])):
        for name in names:
            assert not hasattr(mod, name), f"{mod.__name__}.{name}"
    assert callable(fit.fit) and callable(fit.key_of)
    assert {"source_only", "oracle", "adaptseg", "das3", "ripu", "cdcl", "ddep", "ddep_pretrain",
            "ddep_encoder", "weights_file"} <= set(methods.names())


def test_split_modules_keep_their_old_import_paths():
    from kit import active, annotation, cli, notebook_runner, results, stats

    for name in ("BUDGET_ROUNDINGS", "Budget", "AnnotationState", "select_round", "image_level_select"):
        assert not hasattr(active, name) and hasattr(annotation, name), name   # one home, no shim
    for name in ("Effect", "HOLDS", "VERDICTS", "effect", "seeds_needed", "all_hold", "mean_sd"):
        assert getattr(results, name) is getattr(stats, name), name
    for name in ("CliError", "DEFAULT_PROFILE", "notebooks_dir", "list_notebooks", "find_notebook",
                 "notebook_parameters", "run_notebook"):
        assert getattr(cli, name) is getattr(notebook_runner, name), name
