"""Profiles and validation."""
import pytest

from kit.config import PROFILES, resolve


def test_profiles_resolve():
    for p in PROFILES:
        cfg = resolve(p)
        assert cfg.profile == p and cfg.iters >= 1


def test_override_and_none_keeps_default():
    cfg = resolve("quick", iters=5, lr=None)
    assert cfg.iters == 5 and cfg.lr == resolve("quick").lr
    assert resolve("quick", ITERS="7").iters == 7


def test_unknown_profile_lists_valid():
    with pytest.raises(ValueError) as e:
        resolve("fast")
    assert "smoke" in str(e.value) and "quick" in str(e.value) and "paper" in str(e.value)


def test_unknown_parameter_lists_valid_and_suggests():
    with pytest.raises(ValueError) as e:
        resolve("quick", itres=3)
    assert "iters" in str(e.value) and "Did you mean" in str(e.value)


@pytest.mark.parametrize("bad", [dict(iters="many"), dict(iters=2.5), dict(size=[64]), dict(amp="fp8"),
                                 dict(output_stride=4), dict(batch_size=0), dict(channels_last="maybe")])
def test_bad_values(bad):
    with pytest.raises((TypeError, ValueError)):
        resolve("quick", **bad)


def test_hash_stable_and_sensitive():
    assert resolve("quick").hash() == resolve("quick").hash()
    assert resolve("quick").hash() != resolve("quick", iters=1).hash()
    assert resolve("quick").hash() == resolve("quick", progress=False).hash()


def test_attribute_access_errors():
    cfg = resolve("smoke")
    with pytest.raises(AttributeError):
        cfg.nonexistent
    with pytest.raises(AttributeError):
        cfg.nonexistent = 1
