"""Settings: presets, validation messages that name the setting, JSON and CLI round trips."""

import dataclasses
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.cli.main import build_parser, config_from_args
from engine.config.resolve import DeviceInfo, cpu_has_native_bf16, resolve_config, resolve_device
from engine.config.settings import ConfigError, describe_allowed
from engine.config.train_config import AugmentConfig, TrainConfig, augment_preset, preset

CPU = DeviceInfo("cpu", "test cpu", None, False)
GPU = DeviceInfo("cuda", "test gpu", 80.0, True)


def test_presets_follow_the_papers():
    s, m = augment_preset("simclr"), augment_preset("moco")
    assert (s.crop_scale_min, s.jitter_strength, s.jitter_p, s.grayscale_p) == (0.08, 1, 0.8, 0.2)
    assert (s.jitter_brightness, s.jitter_hue) == (0.8, 0.2)
    assert m.crop_scale_min == 0.2
    # MoCo v2's 0.4/0.4/0.4/0.1 jitter:
    assert m.jitter_brightness * m.jitter_strength == pytest.approx(0.4)
    assert m.jitter_hue * m.jitter_strength == pytest.approx(0.1)


def test_auto_values_depend_on_device_and_data():
    gpu, why = resolve_config(preset("simclr"), GPU, typical_side=500, num_images=10_000)
    assert (gpu.backbone, gpu.image_size, gpu.cache_size, gpu.batch_size) == (
        "resnet50", 224, 256, 256)
    assert (gpu.small_stem, gpu.precision, gpu.channels_last) == (False, "bf16", True)
    assert gpu.augment.blur_p == 0.5 and gpu.proj_hidden_dim == 2048
    assert gpu.optimizer == "lars" and gpu.temperature == 0.1 and "backbone" in why
    assert (gpu.lr, gpu.lr_scaling) == (1.2, "sqrt")  # SimCLR's 0.075 x sqrt(batch)
    cpu, _ = resolve_config(preset("moco"), CPU, typical_side=500, num_images=10_000)
    assert (cpu.backbone, cpu.image_size, cpu.small_stem, cpu.precision) == (
        "resnet18", 32, True, "fp32")
    assert cpu.augment.blur_p == 0.0 and cpu.optimizer == "sgd" and not cpu.head_batch_norm
    assert (cpu.lr, cpu.lr_scaling) == (0.03, "linear")
    small, _ = resolve_config(preset("simclr"), GPU, typical_side=28, num_images=10_000)
    assert small.image_size == 32  # the data's own size, not 224


def test_moco_queue_is_reduced_to_fit_the_dataset():
    cfg = dataclasses.replace(preset("moco"), batch_size=64)
    out, why = resolve_config(cfg, CPU, typical_side=None, num_images=1000)
    assert out.queue_size == 896 and "reduced" in why["queue_size"]
    with pytest.raises(ConfigError, match="MoCo needs more images"):
        resolve_config(cfg, CPU, typical_side=None, num_images=100)


def test_batch_larger_than_dataset_is_refused_with_what_was_found():
    with pytest.raises(ConfigError, match=r"batch_size 64 is larger than the 10 usable"):
        resolve_config(dataclasses.replace(preset("simclr"), batch_size=64), CPU,
                       typical_side=None, num_images=10)


def test_cpu_precision_follows_its_bf16_instructions():
    with pytest.raises(ConfigError, match="precision fp16 needs a GPU"):
        resolve_config(dataclasses.replace(preset("simclr"), precision="fp16"), CPU,
                       typical_side=None, num_images=1000)
    plain, why = resolve_config(preset("simclr"), CPU, typical_side=None, num_images=1000)
    assert (plain.precision, plain.channels_last) == ("fp32", True)
    asked, why = resolve_config(dataclasses.replace(preset("simclr"), precision="bf16"), CPU,
                                typical_side=None, num_images=1000)
    assert asked.precision == "bf16" and "emulated" in why["precision"]
    bf16_cpu = dataclasses.replace(CPU, bf16=True)
    auto, why = resolve_config(preset("simclr"), bf16_cpu, typical_side=None, num_images=1000)
    assert auto.precision == "bf16" and "bf16 instructions" in why["precision"]
    assert resolve_device("cpu")[1].bf16 == cpu_has_native_bf16()


def test_json_round_trip_and_unknown_keys():
    cfg, _ = resolve_config(preset("moco"), GPU, typical_side=None, num_images=10**6)
    text = json.dumps(cfg.to_dict())
    assert TrainConfig.from_dict(json.loads(text)) == cfg
    with pytest.raises(ConfigError, match="unknown setting in config: learning_rate"):
        TrainConfig.from_dict({"learning_rate": 0.1})
    with pytest.raises(ConfigError, match=r"unknown setting in config \(augment\): blur\."):
        TrainConfig.from_dict({"augment": {"blur": 0.1}})


@pytest.mark.parametrize("values,named", [
    ({"batch_size": 0}, "batch_size"), ({"batch_size": "many"}, "batch_size"),
    ({"epochs": -1}, "epochs"), ({"lr": 0}, "lr"), ({"lr": float("nan")}, "lr"),
    ({"temperature": 0}, "temperature"), ({"method": "no-such-method"}, "method"),
    ({"backbone": "vit"}, "backbone"), ({"image_size": 8}, "image_size"),
    ({"device": "gpu"}, "device"), ({"moco_momentum": 1.5}, "moco_momentum"),
    ({"image_size": 64, "cache_size": 32}, "cache_size"), ({"compile": "maybe"}, "compile"),
    ({"augment": {"crop_scale_min": 0}}, "crop_scale_min"),
    ({"augment": {"crop_scale_min": 0.9, "crop_scale_max": 0.5}}, "crop_scale_min"),
    ({"augment": {"jitter_hue": 0.4, "jitter_strength": 2}}, "jitter_hue"),
    ({"augment": {"normalize_std": [1, 0, 1]}}, "normalize_std"),
])
def test_bad_values_name_the_setting(values, named):
    with pytest.raises(ConfigError, match=named):
        TrainConfig.from_dict(values)


NUMERIC = [f.name for f in dataclasses.fields(TrainConfig)
           if f.metadata and (f.metadata["min"] is not None or f.metadata["max"] is not None)]
AUG_NUMERIC = [f.name for f in dataclasses.fields(AugmentConfig)
               if f.metadata and f.metadata["min"] is not None]
hostile = st.one_of(
    st.integers(min_value=-10**12, max_value=10**12), st.floats(allow_nan=True),
    st.text(max_size=8), st.booleans(), st.lists(st.integers(), max_size=2), st.none())


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(NUMERIC + AUG_NUMERIC), value=hostile)
def test_fuzzed_values_are_accepted_valid_or_refused_by_name(name, value):
    where = {"augment": {name: value}} if name in AUG_NUMERIC else {name: value}
    try:
        cfg = TrainConfig.from_dict(where)
    except ConfigError as exc:
        assert name in str(exc)
        return
    got = getattr(cfg.augment if name in AUG_NUMERIC else cfg, name)
    meta = {f.name: f.metadata for f in dataclasses.fields(
        AugmentConfig if name in AUG_NUMERIC else TrainConfig)}[name]
    if got is not None:  # accepted values lie in the declared range
        assert meta["min"] is None or got >= meta["min"]
        assert meta["max"] is None or got <= meta["max"]


def test_cli_flags_override_config_file_over_preset(tmp_path):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"epochs": 7, "batch_size": 32, "augment": {"flip_p": 0.1}}))
    args = build_parser().parse_args([
        "train", "--data", str(tmp_path), "--method", "moco", "--config", str(config),
        "--batch-size", "16", "--grayscale-p", "0.3", "--no-compile"])
    cfg = config_from_args(args)
    assert (cfg.method, cfg.epochs, cfg.batch_size) == ("moco", 7, 16)
    assert (cfg.augment.flip_p, cfg.augment.grayscale_p) == (0.1, 0.3)
    assert cfg.augment.crop_scale_min == 0.2  # MoCo v2 preset
    assert cfg.compile is False


def test_cli_refuses_bad_value_before_anything_runs(tmp_path):
    args = build_parser().parse_args(["train", "--data", str(tmp_path), "--batch-size", "0"])
    with pytest.raises(ConfigError, match="batch_size"):
        config_from_args(args)


def test_to_arguments_gives_the_command_line_of_any_settings(tmp_path):
    """What the app passes to the engine child parses back to the same settings, on/off
    settings (bare --name / --no-name) and tri-state ones (auto / on / off) included."""
    from engine.cli.args import to_arguments

    for ramp, compile_, stem, lr in ((True, True, False, 0.5), (False, False, True, None)):
        values = {"method": "moco", "momentum_ramp": ramp, "compile": compile_,
                  "small_stem": stem, "batch_size": 24, "lr": lr, "queue_size": 96}
        augment = {"flip_p": 0.25, "blur_p": 0.0}
        argv = (["train", "--data", str(tmp_path)] + to_arguments(TrainConfig, values)
                + to_arguments(AugmentConfig, augment))
        cfg = config_from_args(build_parser().parse_args(argv))
        assert {name: getattr(cfg, name) for name in values} == values
        assert (cfg.augment.flip_p, cfg.augment.blur_p) == (0.25, 0.0)
    assert "--lr" not in to_arguments(TrainConfig, {"lr": None})  # auto: left out


# --- the method registry ------------------------------------------------------------------

def test_every_method_in_the_registry_is_a_choice_with_its_preset_and_defaults():
    from engine.methods import METHODS, build_model

    assert tuple(METHODS) == ("simclr", "moco", "byol", "supcon", "instdisc", "rotation")
    for name in METHODS:  # the CLI's choices
        assert build_parser().parse_args(["demo", "--method", name]).method == name
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    for name, spec in METHODS.items():
        assert spec.name == name and spec.title and spec.paper
        assert set(spec.settings) <= names  # its own settings are TrainConfig's
        required = {"temperature", "optimizer", "head_batch_norm"}
        # resolve reads them: a paper may fix its rate, decay, z width and backbone
        optional = {"lr", "lr_scaling", "weight_decay", "proj_out_dim", "backbone"}
        assert required <= set(spec.defaults) <= required | optional
        assert augment_preset(name) == AugmentConfig(**spec.augment)
        cfg, _ = resolve_config(preset(name), CPU, typical_side=None, num_images=1000)
        assert (cfg.temperature, cfg.optimizer, cfg.head_batch_norm) == (
            spec.defaults["temperature"], spec.defaults["optimizer"],
            spec.defaults["head_batch_norm"])
        model = build_model(dataclasses.replace(cfg, backbone="resnet18", proj_hidden_dim=8))
        assert set(spec.step_fields(model)) == set(spec.logged)
    assert METHODS["moco"].settings == ("queue_size", "moco_momentum", "momentum_ramp")
    assert METHODS["simclr"].settings == ()
    assert METHODS["byol"].settings == ("target_momentum",)
    help_of = {f.name: f.metadata for f in dataclasses.fields(TrainConfig)}
    # Each "auto" text names every method's paper value, except for a method that does not
    # read the setting (BYOL has no temperature).
    temperature = describe_allowed(help_of["temperature"], float)
    optimizer, head_bn = str(help_of["optimizer"]), str(help_of["head_batch_norm"])
    for spec in METHODS.values():
        said = f"{spec.defaults['temperature']} for {spec.title}"
        assert (said in temperature) == ("temperature" not in spec.ignores), spec.name
        assert f"{spec.defaults['optimizer'].upper()} for {spec.title}" in optimizer
        said = f"{'on' if spec.defaults['head_batch_norm'] else 'off'} for {spec.title}"
        assert (said in head_bn) == ("head_batch_norm" not in spec.ignores), spec.name
    assert "0.1 for SimCLR, 0.2 for MoCo v2" in temperature and "BYOL" not in temperature
    assert "256 for BYOL, 128 for the others" in str(help_of["proj_out_dim"])
    assert head_bn.endswith("as in the papers") or "as in the papers" in head_bn


def test_run_settings_are_the_resolved_config_without_auto_values():
    from engine.config.resolve import RunSettings

    assert [f.name for f in dataclasses.fields(RunSettings)][1:] == [
        f.name for f in dataclasses.fields(TrainConfig)]
    with pytest.raises(ValueError, match="backbone"):
        RunSettings.of(preset("simclr"))
    cfg, _ = resolve_config(preset("moco"), GPU, typical_side=500, num_images=10_000)
    settings = RunSettings.of(cfg)
    assert settings.to_dict() == cfg.to_dict()  # config.json is written from it unchanged
    assert settings.batch_size == 256 and settings.precision == "bf16"
