"""Starting a run from existing weights (--init): the file kinds, the checks and their
messages, ImageNet offline and from the hub cache, and what the loop does with them."""

import json
import urllib.error
from pathlib import Path

import pytest
import torch
from torchvision import models as tvm

from engine.config.resolve import DeviceInfo, RunSettings, resolve_config
from engine.config.settings import ConfigError
from engine.config.train_config import TrainConfig
from engine.methods import METHODS, build_model
from engine.models.encoder import Encoder, build_backbone
from engine.models.init_weights import (
    check_fits,
    imagenet_cache_path,
    read_init,
)
from engine.run.layout import RunDir
from tests.helpers.folders import make_folder
from tests.helpers.settings import TINY
from tests.helpers.training import events_of, run

CPU = DeviceInfo("cpu", "test CPU", None, False)


def resnet18_state(small_stem: bool = False, seed: int = 1) -> dict[str, torch.Tensor]:
    """A torchvision ResNet-18 state_dict with its fc (1000 classes), seeded."""
    torch.manual_seed(seed)
    net = tvm.resnet18(weights=None)
    if small_stem:
        net.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    return net.state_dict()


def same_weights(module_state, expected, *, skip_fc=True) -> bool:
    keys = [k for k in expected if not (skip_fc and k.startswith("fc."))]
    return all(torch.equal(module_state[k], expected[k]) for k in keys)


# ---------------------------------------------------------------------- the file kinds


def test_a_torchvision_state_dict_loses_its_fc_and_tells_its_architecture(tmp_path):
    sd = resnet18_state()
    torch.save(sd, tmp_path / "r18.pth")
    weights = read_init(str(tmp_path / "r18.pth"))
    assert (weights.arch, weights.small_stem) == ("resnet18", False)
    assert "fc.weight" not in weights.state and same_weights(weights.state, sd)
    assert weights.source == str((tmp_path / "r18.pth").resolve())
    assert len(weights.sha256) == 64 and "r18.pth" in weights.description


@pytest.mark.parametrize("wrap, prefix", [("state_dict", "module."), ("model", "backbone."),
                                          (None, "module.encoder_q.")])
def test_wrapped_and_prefixed_state_dicts_are_understood(tmp_path, wrap, prefix):
    sd = resnet18_state()
    state = {prefix + k: v for k, v in sd.items()}
    if prefix == "module.encoder_q.":  # MoCo's layout: the key encoder is not taken
        state.update({"module.encoder_k." + k: torch.zeros_like(v) for k, v in sd.items()})
        state["module.queue"] = torch.zeros(4, 2)
    torch.save({wrap: state, "epoch": 3} if wrap else state, tmp_path / "w.pt")
    weights = read_init(str(tmp_path / "w.pt"))
    assert same_weights(weights.state, sd)
    assert f"prefix {prefix!r} removed" in weights.description


def test_two_resnets_side_by_side_are_refused_by_name(tmp_path):
    sd = resnet18_state()
    torch.save({**{"a." + k: v for k, v in sd.items()}, **{"b." + k: v for k, v in sd.items()}},
               tmp_path / "two.pt")
    with pytest.raises(ConfigError, match="several ResNets.*'a.', 'b.'"):
        read_init(str(tmp_path / "two.pt"))


def test_a_safetensors_file(tmp_path):
    from safetensors.torch import save_file

    sd = resnet18_state(small_stem=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "w.safetensors"))
    weights = read_init(str(tmp_path / "w.safetensors"))
    assert (weights.arch, weights.small_stem) == ("resnet18", True)
    assert same_weights(weights.state, sd)


def test_safetensors_missing_names_the_pip_command(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_safetensors(name, *args, **kwargs):
        if name.startswith("safetensors"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    (tmp_path / "w.safetensors").write_bytes(b"x")
    monkeypatch.setattr(builtins, "__import__", no_safetensors)
    with pytest.raises(ConfigError, match="pip install safetensors"):
        read_init(str(tmp_path / "w.safetensors"))


def test_pickled_code_is_refused_and_other_files_are_named(tmp_path):
    torch.save({"conv1.weight": torch.zeros(1), "thing": Path("x")}, tmp_path / "code.pt")
    with pytest.raises(ConfigError, match="Python objects besides tensors"):
        read_init(str(tmp_path / "code.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ConfigError, match="not a readable weights file"):
        read_init(str(tmp_path / "junk.pt"))
    with pytest.raises(ConfigError, match="no such file"):
        read_init(str(tmp_path / "gone.pt"))
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ConfigError, match="not a torchvision ResNet"):
        read_init(str(tmp_path / "other.pt"))


# ------------------------------------------------------------------------- the checks


def test_a_stem_mismatch_names_both_shapes_and_the_fix(tmp_path):
    torch.save(resnet18_state(), tmp_path / "r18.pth")
    weights = read_init(str(tmp_path / "r18.pth"))
    with pytest.raises(ConfigError) as err:
        check_fits(weights, "resnet18", small_stem=True)
    message = str(err.value)
    assert "conv1.weight: this run's resnet18 with the small 3x3 stem expects (64, 3, 3, 3)" \
        in message and "the file has (64, 3, 7, 7)" in message
    assert "--small-stem false" in message
    check_fits(weights, "resnet18", small_stem=False)  # fits: no error


def test_an_architecture_mismatch_and_missing_keys_are_named(tmp_path):
    torch.manual_seed(0)
    torch.save(tvm.resnet34(weights=None).state_dict(), tmp_path / "r34.pth")
    weights = read_init(str(tmp_path / "r34.pth"))
    assert weights.arch == "resnet34"
    with pytest.raises(ConfigError, match="holds a resnet34 backbone.*--backbone resnet34"):
        check_fits(weights, "resnet18", small_stem=False)
    sd = resnet18_state()
    del sd["layer2.0.bn1.weight"]
    sd["extra.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "cut.pth")
    with pytest.raises(ConfigError, match=r"1 missing \(layer2.0.bn1.weight\); "
                                          r"1 unexpected \(extra.weight\)"):
        check_fits(read_init(str(tmp_path / "cut.pth")), "resnet18", small_stem=False)


def test_auto_backbone_and_stem_follow_the_file_not_the_image_size(tmp_path):
    torch.save(tvm.resnet34(weights=None).state_dict(), tmp_path / "r34.pth")
    weights = read_init(str(tmp_path / "r34.pth"))
    cfg = TrainConfig(image_size=16, init=weights.source)
    resolved, why = resolve_config(cfg, CPU, typical_side=None, num_images=None, init=weights)
    assert (resolved.backbone, resolved.small_stem) == ("resnet34", False)
    assert "--init" in why["backbone"] and "--init" in why["small_stem"]
    plain, _ = resolve_config(TrainConfig(image_size=16), CPU, typical_side=None,
                              num_images=None)
    assert (plain.backbone, plain.small_stem) == ("resnet18", True)  # without init


# --------------------------------------------------------------------------- ImageNet


def test_imagenet_offline_stops_before_anything_starts(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    asked = []

    def offline(url, dst, *args, **kwargs):
        asked.append(url)
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    scanned = []
    monkeypatch.setattr("engine.training.loop.scan_data",
                        lambda *a, **k: scanned.append(a) or pytest.fail("scanned"))
    folder = make_folder(tmp_path / "shapes")
    with pytest.raises(ConfigError) as err:
        run({"data": str(folder), "init": "imagenet", "small_stem": None}, tmp_path)
    message = str(err.value)
    url = tvm.ResNet18_Weights.IMAGENET1K_V1.url
    expected_path = tmp_path / "torch" / "hub" / "checkpoints" / url.rsplit("/", 1)[-1]
    assert asked == [url] and f"could not be fetched from {url}" in message
    assert str(expected_path) in message and "--init PATH" in message
    assert not scanned and not (tmp_path / "runs").exists() and not (tmp_path / "cache").exists()
    assert not expected_path.exists()


def test_imagenet_from_the_hub_cache_without_a_download(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "download_url_to_file",
                        lambda *a, **k: pytest.fail("downloaded"))
    path = imagenet_cache_path("resnet18")
    assert path.name == tvm.ResNet18_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]
    path.parent.mkdir(parents=True)
    sd = resnet18_state(seed=5)
    torch.save(sd, path)
    weights = read_init("imagenet", backbone="resnet18")
    assert weights.source == "imagenet" and weights.path == path
    assert "IMAGENET1K_V1" in weights.description and same_weights(weights.state, sd)
    with pytest.raises(ConfigError, match="ImageNet weights need the standard stem"):
        check_fits(weights, "resnet18", small_stem=True)


# ------------------------------------------------------------------ build_model and runs


@pytest.mark.parametrize("method", list(METHODS))
def test_build_model_copies_the_weights_into_every_encoder_of_the_method(tmp_path, method):
    """The online encoder and any copy of it the method keeps (MoCo's key encoder, a
    target network) start from the file's weights."""
    sd = resnet18_state(small_stem=True, seed=3)
    torch.save(sd, tmp_path / "w.pt")
    weights = read_init(str(tmp_path / "w.pt"))
    cfg, _ = resolve_config(TrainConfig.from_dict({**TINY, "method": method}), CPU,
                            typical_side=None, num_images=100)
    settings = RunSettings.of(cfg)
    model = build_model(settings, init=weights)
    encoders = [m for m in model.modules() if isinstance(m, Encoder)]
    assert model.online_encoder in encoders
    for encoder in encoders:
        assert same_weights(encoder.backbone.state_dict(), sd)
    if method == "moco":
        assert len(encoders) == 2 and model.encoder_k in encoders
    plain = build_model(settings)  # without init: random, unlike the file
    assert not torch.equal(plain.online_encoder.backbone.conv1.weight, sd["conv1.weight"])


def test_a_run_from_a_file_records_it_resumes_and_exports_without_it(tmp_path):
    from engine.evaluate.explore import embeddings, export_encoder_of_run

    folder = make_folder(tmp_path / "shapes")
    sd = resnet18_state(small_stem=True, seed=7)
    init = tmp_path / "start.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}}, init)
    sha_copy = tmp_path / "copy.pth"  # the same bytes, to hash once the original is gone
    sha_copy.write_bytes(init.read_bytes())
    result = run({"data": str(folder), "init": str(init), "epochs": 1, "max_steps": 1,
                  "knn_every": 0}, tmp_path)
    assert result.status == "finished", result.reason
    start = next(e for e in events_of(result.run_dir) if e["type"] == "run_start")
    assert start["init"] == str(init.resolve()) and start["config"]["init"] == start["init"]
    assert start["init_sha256"] == read_init(str(init)).sha256
    config = json.loads(RunDir(result.run_dir).config.read_text())
    assert config["init"] == str(init.resolve())

    init.unlink()  # the file is gone: resuming, embedding and exporting do not need it
    again = run({}, tmp_path, resume=result.run_dir, resume_overrides={"max_steps": 2})
    assert again.status == "finished" and again.step == 2, again.reason
    restart = [e for e in events_of(result.run_dir) if e["type"] == "run_start"][-1]
    assert restart["resumed"] and restart.get("init_sha256") is None
    emb = embeddings(result.run_dir, device="cpu", cache_dir=tmp_path / "cache")
    assert emb.features.shape[1] == 512
    exported = export_encoder_of_run(result.run_dir, "torchvision", tmp_path / "enc.pt")
    assert Path(exported["path"]).is_file()
    meta = json.loads(Path(exported["metadata"]).read_text())
    assert meta["init"] == {"weights": str(init.resolve()),
                            "sha256": read_init(str(sha_copy)).sha256}

    # An export and a checkpoint of this program are init files too.
    for source in (Path(exported["path"]), Path(exported["path"] + ".json"),
                   RunDir(result.run_dir).last_checkpoint, result.run_dir):
        weights = read_init(str(source))
        assert (weights.arch, weights.small_stem) == ("resnet18", True)
        assert weights.state.keys() == build_backbone("resnet18", small_stem=True
                                                      ).state_dict().keys()


def test_train_help_shows_init():
    from engine.cli.main import build_parser

    train = next(a for a in build_parser()._subparsers._group_actions[0].choices.items()
                 if a[0] == "train")[1]
    text = " ".join(train.format_help().split())
    assert "--init INIT" in text and "imagenet (torchvision's published ImageNet" in text
    assert 'Default: "" (empty)' in text


def test_the_terminal_report_names_the_init_weights():
    import io

    from engine.cli.terminal import TerminalReport

    def start(**fields):
        screen = io.StringIO()
        report = TerminalReport(screen, width=100, tick=None)
        report({"v": 1, "type": "run_start", "time": 1.0, "run_dir": "/runs/r",
                "resumed": False, "config": {"method": "simclr", "epochs": 1},
                "dataset": {"images": 4}, "steps_per_epoch": 1, "total_steps": 1,
                "start_step": 0, **fields})
        report.close()
        return screen.getvalue()

    assert "  init    imagenet (sha256 0123456789ab)" in start(init="imagenet",
                                                             init_sha256="0123456789abcdef")
    assert "init " not in start(init="")
