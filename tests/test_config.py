import dataclasses
import sys

import pytest

from jaxauction.config import Config, ConfigError, validate
from jaxauction.config_io import CONFIG_DIR, apply_overrides, load_config


def test_load_by_name_file_and_path_agree():
    a, b, c = load_config("2x2"), load_config("2x2.py"), load_config(str(CONFIG_DIR / "2x2.py"))
    assert a == b == c
    assert a.name == "2x2"
    assert (a.n_agents, a.n_items, a.hidden) == (2, 2, (128, 128, 128))
    assert (a.allocation, a.payment) == ("sparsemax", "fractional") and a.stability_weight > 0


def test_variant_overrides_only_its_fields():
    base, noreg = load_config("2x2"), load_config("2x2_noreg")
    assert (noreg.stability_weight, noreg.rho, noreg.lambda_init) == (0.0, 10.0, 5.0)
    assert dataclasses.replace(noreg, stability_weight=base.stability_weight, rho=base.rho,
                               lambda_init=base.lambda_init, name=base.name) == base
    teacher, distill = load_config("1x2_teacher"), load_config("1x2_distill")
    assert (teacher.allocation, teacher.payment) == ("softmax", "fractional_sigmoid")
    assert (distill.allocation, distill.payment, distill.ir_penalty) == ("sparsemax", "free", True)
    assert distill.teacher == "runs/1x2_teacher"


@pytest.mark.parametrize("name", sorted(p.stem for p in CONFIG_DIR.glob("*.py")))
def test_every_shipped_config_is_valid(name):
    cfg = load_config(name)
    assert cfg.name == name
    validate(cfg, check_files=False)  # teachers are runs that may not exist yet
    cfg.spec(), cfg.prior()


def test_asymmetric_prior_and_payment_max():
    cfg = load_config("1x2_asym")
    lo, hi = cfg.prior().bounds()
    assert lo.tolist() == [[4.0, 4.0]] and hi.tolist() == [[16.0, 7.0]]
    assert cfg.spec().payment_max == 23.0  # sum over items of the highest value
    assert load_config("2x2").spec().payment_max == 2.0  # = n_items on U[0, 1], as the paper


def test_user_config_dir_with_its_own_default_does_not_shadow(tmp_path):
    (tmp_path / "default.py").write_text(
        "from jaxauction.config import Config\n\ndef get_config():\n    return Config(n_agents=3, n_items=1)\n")
    (tmp_path / "mine.py").write_text(
        "import dataclasses\nfrom default import get_config as base\n\n"
        "def get_config():\n    return dataclasses.replace(base(), batch_size=64, num_examples=640)\n")
    mine = load_config(tmp_path / "mine.py")
    assert (mine.name, mine.n_agents, mine.n_items, mine.batch_size) == ("mine", 3, 1, 64)
    assert load_config("default").n_agents == 1  # the repo's default is unaffected
    assert str(tmp_path) not in sys.path


def test_unknown_config_lists_available():
    with pytest.raises(ConfigError, match="available"):
        load_config("9x9_nope")


def test_broken_config_file_is_named(tmp_path):
    (tmp_path / "bad.py").write_text("def get_config():\n    return 42\n")
    with pytest.raises(ConfigError, match="bad.py"):
        load_config(tmp_path / "bad.py")


def test_overrides_parse_by_field_type():
    cfg = apply_overrides(Config(), ["batch_size=512", "lr=3e-4", "warm_start=false", "hidden=64,32",
                                     "prior_high=16,7", "payment_max=5", "allocation=softmax", "teacher="])
    assert cfg.batch_size == 512 and isinstance(cfg.batch_size, int)
    assert cfg.lr == 3e-4 and cfg.warm_start is False
    assert cfg.hidden == (64, 32) and cfg.prior_high == (16.0, 7.0)
    assert cfg.payment_max == 5.0 and cfg.allocation == "softmax" and cfg.teacher == ""
    assert apply_overrides(cfg, ["payment_max=none"]).payment_max is None
    assert apply_overrides(cfg, ["warm_start=1"]).warm_start is True


@pytest.mark.parametrize("override,field", [
    ("batch_sise=3", "batch_sise"),
    ("batch_size=3.5", "batch_size"),
    ("warm_start=maybe", "warm_start"),
    ("hidden=64,x", "hidden"),
    ("lr", "lr"),
])
def test_override_errors_name_the_field(override, field):
    with pytest.raises(ConfigError, match=field):
        apply_overrides(Config(), [override])


@pytest.mark.parametrize("changes,field", [
    ({"batch_size": 0}, "batch_size"),
    ({"n_agents": -1}, "n_agents"),
    ({"hidden": (128, 0)}, "hidden"),
    ({"allocation": "argmax"}, "allocation"),
    ({"payment": "linear"}, "payment"),
    ({"payment": "free"}, "ir_penalty"),
    ({"teacher": "runs/nowhere_teacher"}, "teacher"),
    ({"teacher": "x", "distill_weight": 0.0}, "distill_weight"),
    ({"prior_low": (0.0, 2.0), "prior_high": (1.0, 1.0)}, "prior_high"),
    ({"prior_low": (0.0, 0.0, 0.0)}, "prior_low"),
    ({"batch_size": 1000, "num_examples": 10}, "batch_size"),
    ({"lr": "0.1"}, "lr"),
    ({"steps": 2.0}, "steps"),
    ({"lr_decay_to": 2.0}, "lr_decay_to"),
])
def test_validate_rejects_and_names_the_field(changes, field):
    with pytest.raises(ConfigError, match=field):
        validate(dataclasses.replace(Config(), **changes))


def test_dict_round_trip():
    cfg = apply_overrides(load_config("1x2_asym"), ["hidden=8,8"])
    assert Config.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="bogus"):
        Config.from_dict({**cfg.to_dict(), "bogus": 1})


def test_config_with_bad_field_names_file_and_field(tmp_path):
    (tmp_path / "typo.py").write_text(
        "import dataclasses\nfrom jaxauction.config import Config\n\n"
        "def get_config():\n    return dataclasses.replace(Config(), n_agent=2)\n")
    with pytest.raises(ConfigError, match="typo.py.*n_agent"):
        load_config(tmp_path / "typo.py")


def test_one_set_of_defaults():
    """``Config()`` is the default setting: configs/default.py (and 1x2.py, which is it) return it
    unchanged, so the defaults are written down once."""
    assert load_config("default") == dataclasses.replace(Config(), name="default")
    assert load_config("1x2") == dataclasses.replace(Config(), name="1x2")
    validate(Config())


def test_absent_fields_take_the_value_old_runs_were_trained_with():
    """A config.json written before a field existed was trained with the code's behaviour then
    (no misreport restarts, Glorot payments, zero biases, the Xiao loss), not today's default."""
    from jaxauction.config import ABSENT_FIELD_VALUES

    assert set(ABSENT_FIELD_VALUES) <= {f.name for f in dataclasses.fields(Config)}
    old = {k: v for k, v in Config().to_dict().items() if k not in ABSENT_FIELD_VALUES}
    cfg = Config.from_dict(old)
    assert {k: getattr(cfg, k) for k in ABSENT_FIELD_VALUES} == ABSENT_FIELD_VALUES
    assert Config().misreport_restarts == 2 and cfg.misreport_restarts == 0
    assert Config.from_dict(Config().to_dict()) == Config()  # present fields always win


def test_nan_in_a_numeric_field_is_refused_by_name():
    for field in ("lr", "regret_budget", "rho", "stability_weight"):
        with pytest.raises(ConfigError, match=f"^{field}: must be"):
            validate(dataclasses.replace(Config(), **{field: float("nan")}))
