import pytest

from paddleseg_ext.cvlibs import ConfigError, Registry, manager


def test_register_and_get():
    reg = Registry("things")

    @reg.register
    class Alpha:
        pass

    @reg.register(name="B")
    class Beta:
        pass

    assert reg.get("Alpha") is Alpha and reg.get("B") is Beta
    assert "Alpha" in reg and len(reg) == 2


def test_duplicate_registration_is_an_error():
    reg = Registry("things")

    @reg.register
    class Alpha:
        pass

    with pytest.raises(KeyError, match="already registered in the things registry"):
        reg.register(type("Alpha", (), {}))


def test_unknown_names_close_matches():
    reg = Registry("models")
    reg.register(type("PSPNet", (), {}))
    reg.register(type("PSANet", (), {}))
    with pytest.raises(ConfigError) as e:
        reg.get("PSPnet", "model in x.yml")
    msg = str(e.value)
    assert "Unknown models type 'PSPnet'" in msg and "PSPNet" in msg and "x.yml" in msg


def test_real_registries_are_populated():
    import paddleseg_ext  # noqa: F401

    assert "sgd" in manager.OPTIMIZERS and "PolynomialDecay" in manager.LR_SCHEDULERS
    err = manager.unknown_anywhere("PolynomialDecy", "lr_scheduler")
    assert "PolynomialDecay (lr_schedulers)" in str(err)
