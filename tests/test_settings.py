"""`swapstream train --set KEY=VALUE`: fields of a method's config changed for a new run."""
from __future__ import annotations

import pytest

from swapstream.faces.errors import InputError
from swapstream.trainer.methods import preset_config
from swapstream.trainer.settings import apply_settings, parse_assignments


def test_values_are_parsed_as_the_type_the_field_has():
    cfg = apply_settings(preset_config("ae", "cpu"), parse_assignments(
        ["decoder_filters=64,32,16", "bottleneck_filters=128", "expression_weight=5", "jit_compile=true"]))
    assert cfg.decoder_filters == (64, 32, 16) and cfg.bottleneck_filters == 128
    assert cfg.expression_weight == 5.0 and isinstance(cfg.expression_weight, float)
    assert cfg.jit_compile is True
    assert cfg.encoder_filters == preset_config("ae", "cpu").encoder_filters  # the rest as the preset
    assert apply_settings(cfg, parse_assignments(["decoder_filters=[8, 4, 2]"])).decoder_filters == (8, 4, 2)


@pytest.mark.parametrize("items,message", [
    (["latent=128"], "no field 'latent'; valid fields: "),
    (["latent_dim=big"], "'big' is not a int"),
    (["jit_compile=maybe"], "'maybe' is not a bool"),
    (["decoder_filters=64,32"], "decoder_filters needs one entry fewer"),  # the config's own check
    (["latent_dim=0"], "latent_dim must be > 0"),
    (["decoder_filters=,"], "one or more comma-separated values"),
    (["dtype_policy=float16"], "use --precision"),
])
def test_bad_settings_name_the_problem(items, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        apply_settings(preset_config("ae", "cpu"), parse_assignments(items))


def test_unknown_field_error_lists_the_valid_ones():
    with pytest.raises(InputError) as err:
        apply_settings(preset_config("cyclegan", "cpu"), parse_assignments(["decoder_filters=8"]))
    assert "gen_filters, res_blocks, disc_filters" in str(err.value)


@pytest.mark.parametrize("item", ["latent_dim", "=3", "latent_dim="])
def test_an_assignment_needs_key_and_value(item):
    with pytest.raises(InputError, match="KEY=VALUE"):
        parse_assignments([item])


def test_the_demos_network_is_a_narrower_cpu_ae():
    from swapstream.clients.demo import TRAIN_PRESET
    from swapstream.trainer.methods import build_method

    preset = preset_config("ae", "cpu")
    narrow = preset_config("ae", TRAIN_PRESET)
    assert narrow.size == preset.size and narrow.encoder_filters == preset.encoder_filters
    counts = [build_method("ae", cfg).parameter_counts()["total"] for cfg in (preset, narrow)]
    assert counts[1] < 0.6 * counts[0]


def test_augment_keys_change_the_augmentation_and_are_checked():
    from swapstream.trainer.data import AugmentConfig
    from swapstream.trainer.settings import split_section

    pairs = parse_assignments(["augment.rotation_deg=0", "latent_dim=64", "augment.flip=false"])
    augment, model = split_section(pairs, "augment")
    assert model == (("latent_dim", "64"),)
    cfg = apply_settings(AugmentConfig(), augment, "augment")
    assert cfg.rotation_deg == 0.0 and cfg.flip is False and cfg.shift == AugmentConfig().shift
    unknown = r"augment\.rotation: AugmentConfig has no field .*; valid fields: augment\.rotation_deg"
    with pytest.raises(InputError, match=unknown):
        apply_settings(AugmentConfig(), (("rotation", "0"),), "augment")
    for key, value in (("shift", "-0.1"), ("warp_grid", "1")):
        with pytest.raises(InputError, match=f"augment {key}"):
            apply_settings(AugmentConfig(), ((key, value),), "augment")


def test_the_demo_preset_is_what_the_demo_asked_for_with_set_and_lr(tmp_path):
    """`--preset demo` gives the run config the demo's command line used to build from the cpu
    preset with --set and --lr; --set still works on top of a preset."""
    from swapstream.trainer.session import TrainRequest, _new_config

    def config(**kw):
        return _new_config(TrainRequest(out=str(tmp_path / "run"), method="ae", a="a.npz", b="b.npz", **kw), True)

    old = config(preset="cpu", lr=5e-4, settings=parse_assignments(["decoder_filters=64,32,16",
                                                                    "bottleneck_filters=128"]))
    new = config(preset="demo")
    assert (new.model, new.train, new.augment) == (old.model, old.train, old.augment) and new.preset == "demo"
    assert config(preset="demo", settings=(("latent_dim", "64"),)).model.latent_dim == 64
    with pytest.raises(InputError, match="unknown preset 'demo' for vae; valid presets: tiny, cpu, gpu"):
        _new_config(TrainRequest(out=str(tmp_path / "r"), method="vae", a="a.npz", b="b.npz", preset="demo"), True)
