"""Encoder export: each format loads with its own library alone and matches the engine."""

import hashlib
import json
import subprocess
import sys
from datetime import datetime, timezone

import pytest
import torch
from torch import nn
from torchvision import models as tvm

import engine.export.formats as formats_mod
from engine.config.train_config import TrainConfig
from engine.export import (
    FORMATS,
    ExportError,
    MissingExtra,
    export_encoder,
    export_path,
    load_exported,
)
from engine.models.encoder import Encoder, ProjectionHead, build_backbone

SIZE = 32


def make_encoder(arch: str = "resnet18", small_stem: bool = True, seed: int = 0) -> Encoder:
    """A ResNet encoder with non-trivial batch-norm statistics, as after training."""
    torch.manual_seed(seed)
    width = 2048 if arch == "resnet50" else 512
    encoder = Encoder(build_backbone(arch, small_stem=small_stem),
                      ProjectionHead(width, 32, 16, batch_norm=True))
    with torch.no_grad():
        for m in encoder.modules():
            if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    return encoder.train()  # as it comes out of the training loop


def make_cfg(arch: str = "resnet18", small_stem: bool = True) -> TrainConfig:
    return TrainConfig(method="moco", backbone=arch, small_stem=small_stem, image_size=SIZE,
                       proj_hidden_dim=32, proj_out_dim=16, head_batch_norm=True)


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return make_encoder()


@pytest.fixture(scope="module")
def cfg() -> TrainConfig:
    return make_cfg()


def reference(encoder: Encoder, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    import copy

    with torch.no_grad():
        return copy.deepcopy(encoder).eval()(x)


def batch(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def torchvision_keys(arch: str) -> set[str]:
    return {k for k in getattr(tvm, arch)(weights=None).state_dict() if not k.startswith("fc.")}


# ---------------------------------------------------------------------------- torchvision


def test_torchvision_export_loads_into_torchvision_with_the_stem_snippet(encoder, cfg,
                                                                         tmp_path):
    result = export_encoder(encoder, cfg, "torchvision", tmp_path / "enc")
    assert result.path == tmp_path / "enc.pt" and result.verified
    assert encoder.training  # the caller's module is left in training mode

    state = torch.load(result.path, weights_only=True)
    assert set(state) == torchvision_keys("resnet18")
    m = tvm.resnet18()
    m.fc = nn.Identity()
    m.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    m.maxpool = nn.Identity()
    m.load_state_dict(state, strict=True)
    x = batch(3)
    with torch.no_grad():
        torch.testing.assert_close(m.eval()(x), reference(encoder, x)[0], atol=1e-5, rtol=0)


def test_torchvision_load_snippet_runs_as_written(encoder, cfg, tmp_path, monkeypatch):
    result = export_encoder(encoder, cfg, "torchvision", tmp_path / "enc.pt",
                            include_head=True)
    assert result.metadata["head_file"] == "enc-head.pt"
    assert (tmp_path / "enc-head.pt").is_file()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the snippet names the files by their absolute paths
    namespace: dict = {}
    with torch.no_grad():
        exec(result.metadata["load_snippet"], namespace)  # our own snippet
    x = namespace["x"]  # the snippet's dummy batch
    assert x.shape == (2, 3, SIZE, SIZE)
    h, z = reference(encoder, x)
    torch.testing.assert_close(namespace["h"], h, atol=1e-5, rtol=0)
    torch.testing.assert_close(namespace["z"], z, atol=1e-5, rtol=0)


def test_resnet50_standard_stem_needs_only_fc_identity(tmp_path):
    encoder = make_encoder("resnet50", small_stem=False)
    x = batch(2)
    result = export_encoder(encoder, make_cfg("resnet50", small_stem=False), "torchvision",
                            tmp_path / "r50.pt", verify_images=x)
    assert "conv1" not in result.metadata["load_snippet"]
    m = tvm.resnet50()
    m.fc = nn.Identity()
    m.load_state_dict(torch.load(result.path, weights_only=True), strict=True)
    with torch.no_grad():
        h = m.eval()(x)
    assert h.shape == (2, 2048)
    torch.testing.assert_close(h, reference(encoder, x)[0], atol=1e-5, rtol=0)


def test_torchvision_export_is_weights_only_loadable(encoder, cfg, tmp_path):
    path = export_encoder(encoder, cfg, "torchvision", tmp_path / "enc.pt").path
    state = torch.load(path, weights_only=True, map_location="cpu")
    assert type(state) is dict
    assert all(isinstance(v, torch.Tensor) for v in state.values())


# ---------------------------------------------------------------------------- torchscript


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
@pytest.mark.parametrize("include_head", [False, True])
def test_torchscript_runs_at_other_batch_sizes(encoder, cfg, tmp_path, include_head):
    result = export_encoder(encoder, cfg, "torchscript", tmp_path / "enc",
                            include_head=include_head)
    assert result.path.name == "enc.torchscript"
    module = torch.jit.load(str(result.path))
    for n in (1, 5):  # traced at batch 2
        x = batch(n, seed=n)
        with torch.no_grad():
            out = module(x)
        h, z = reference(encoder, x)
        if include_head:
            torch.testing.assert_close(out[0], h, atol=1e-5, rtol=0)
            torch.testing.assert_close(out[1], z, atol=1e-5, rtol=0)
        else:
            torch.testing.assert_close(out, h, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------- onnx


def test_onnx_matches_in_onnxruntime_at_batch_1_and_3(encoder, cfg, tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    result = export_encoder(encoder, cfg, "onnx", tmp_path / "enc.onnx", include_head=True)
    assert result.verified and result.tolerance >= 1e-3
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["h", "z"]
    for n in (1, 3):
        x = batch(n, seed=10 + n)
        h, z = session.run(["h", "z"], {"images": x.numpy()})
        ref_h, ref_z = reference(encoder, x)
        torch.testing.assert_close(torch.from_numpy(h), ref_h, atol=1e-3, rtol=0)
        torch.testing.assert_close(torch.from_numpy(z), ref_z, atol=1e-3, rtol=0)
    props = {p.key: p.value for p in onnx.load(str(result.path)).metadata_props}
    assert json.loads(props["contrastive_explorer"])["architecture"] == "resnet18"


# --------------------------------------------------------------------------- safetensors


def test_safetensors_has_torchvision_keys_and_header_metadata(encoder, cfg, tmp_path):
    st = pytest.importorskip("safetensors")
    from safetensors.torch import load_file

    result = export_encoder(encoder, cfg, "safetensors", tmp_path / "enc")
    assert result.path.name == "enc.safetensors"
    tensors = load_file(str(result.path))
    assert set(tensors) == torchvision_keys("resnet18")
    with st.safe_open(str(result.path), framework="pt") as f:
        header = f.metadata()
    embedded = json.loads(header["contrastive_explorer"])
    assert embedded["format"] == "safetensors" and embedded["small_stem"] is True
    x = batch(2)
    with torch.no_grad():
        torch.testing.assert_close(load_exported(result.path)(x), reference(encoder, x)[0],
                                   atol=1e-5, rtol=0)


# ------------------------------------------------------------------------- load snippets

EXTRAS = {"onnx": ("onnx", "onnxruntime"), "safetensors": ("safetensors",)}


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_load_snippet_runs_alone_on_the_exported_file(encoder, cfg, tmp_path, fmt):
    for name in EXTRAS.get(fmt, ()):
        pytest.importorskip(name)
    result = export_encoder(encoder, cfg, fmt, tmp_path / "export" / "enc", include_head=True)
    snippet = result.load_snippet
    assert snippet == result.metadata["load_snippet"]
    assert repr(str(result.path)) in snippet  # the file by its absolute path
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # -I: no PYTHONPATH, no working directory on sys.path: nothing of this project is found
    done = subprocess.run([sys.executable, "-I", "-c", snippet], cwd=elsewhere,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["h: (2, 512)", "z: (2, 16)"]


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
@pytest.mark.parametrize("fmt", FORMATS)
def test_load_snippet_without_head_gives_the_engines_h(encoder, cfg, tmp_path, fmt):
    for name in EXTRAS.get(fmt, ()):
        pytest.importorskip(name)
    result = export_encoder(encoder, cfg, fmt, tmp_path / "enc")
    namespace: dict = {}
    with torch.no_grad():
        exec(result.load_snippet, namespace)  # our own snippet
    assert "z" not in namespace
    x = torch.as_tensor(namespace["x"])
    assert x.shape == (2, 3, SIZE, SIZE)
    h = torch.as_tensor(namespace["h"])
    tolerance = 1e-3 if fmt == "onnx" else 1e-5
    torch.testing.assert_close(h, reference(encoder, x)[0], atol=tolerance, rtol=0)


# ------------------------------------------------------------------------------ metadata


def test_metadata_records_everything_needed_to_use_the_export(encoder, cfg, tmp_path):
    ckpt = tmp_path / "last.pt"
    ckpt.write_bytes(b"pretend checkpoint bytes")
    summary = {"images": 120, "classes": ["a", "b"]}
    result = export_encoder(encoder, cfg, "torchscript", tmp_path / "out" / "enc",
                            include_head=True, checkpoint_path=ckpt, dataset_summary=summary,
                            epochs_trained=7)
    assert result.metadata_path == tmp_path / "out" / "enc.torchscript.json"
    meta = json.loads(result.metadata_path.read_text())
    assert meta == result.metadata
    for key in ("format", "architecture", "small_stem", "input_size", "channels",
                "normalization", "outputs", "method", "epochs_trained", "dataset",
                "checkpoint", "created", "torch_version", "torchvision_version",
                "load_snippet", "verification"):
        assert key in meta, key
    assert (meta["format"], meta["architecture"], meta["small_stem"]) == (
        "torchscript", "resnet18", True)
    assert (meta["input_size"], meta["channels"], meta["method"]) == (SIZE, 3, "moco")
    assert meta["normalization"] == {"mean": [0.485, 0.456, 0.406],
                                     "std": [0.229, 0.224, 0.225]}
    assert meta["outputs"] == {"h": 512, "z": 16}
    assert meta["epochs_trained"] == 7 and meta["dataset"] == summary
    assert meta["checkpoint"] == {
        "file": "last.pt", "sha256": hashlib.sha256(b"pretend checkpoint bytes").hexdigest()}
    created = datetime.fromisoformat(meta["created"])
    assert created.utcoffset() == timezone.utc.utcoffset(None)
    assert meta["torch_version"] == torch.__version__
    v = meta["verification"]
    assert v["passed"] is True and v["compared"] == ["h", "z"]
    assert 0.0 <= v["max_abs_diff"] <= v["tolerance"] and v["tolerance"] >= 1e-4
    assert (result.max_abs_diff, result.tolerance) == (v["max_abs_diff"], v["tolerance"])
    assert v["images"].startswith("4 ")


def test_verification_catches_wrong_weights(encoder, cfg, tmp_path, monkeypatch):
    real = formats_mod.backbone_state

    def buggy_backbone_state(model):  # a writer bug: one weight slightly off
        state = real(model)
        state["layer4.1.conv2.weight"][0, 0, 0, 0] += 0.5
        return state

    monkeypatch.setattr(formats_mod, "backbone_state", buggy_backbone_state)
    with pytest.raises(ExportError, match="Do not use it") as info:
        export_encoder(encoder, cfg, "torchvision", tmp_path / "enc.pt")
    result = info.value.result
    assert result is not None and not result.verified
    assert result.max_abs_diff > result.tolerance
    meta = json.loads((tmp_path / "enc.pt.json").read_text())
    assert meta["verification"]["passed"] is False
    assert meta["verification"]["max_abs_diff"] > meta["verification"]["tolerance"]


def test_verification_catches_a_damaged_file(encoder, cfg, tmp_path, monkeypatch):
    real = formats_mod.write_atomic

    def truncating_write(path, write):  # e.g. a filesystem that loses the file's tail
        import io

        buffer = io.BytesIO()
        write(buffer)
        data = buffer.getvalue()[: len(buffer.getvalue()) // 2]
        real(path, lambda f: f.write(data))

    monkeypatch.setattr(formats_mod, "write_atomic", truncating_write)
    with pytest.raises(ExportError, match="could not be run back"):
        export_encoder(encoder, cfg, "torchscript", tmp_path / "enc")
    meta = json.loads((tmp_path / "enc.torchscript.json").read_text())
    assert meta["verification"]["passed"] is False and "error" in meta["verification"]


def test_caller_images_are_used_for_verification(encoder, cfg, tmp_path):
    result = export_encoder(encoder, cfg, "torchvision", tmp_path / "enc.pt",
                            verify_images=batch(3).double())
    assert result.metadata["verification"]["images"] == "3 caller-supplied images"
    with pytest.raises(ExportError, match="verify_images"):
        export_encoder(encoder, cfg, "torchvision", tmp_path / "enc.pt",
                       verify_images=torch.zeros(2, 3, SIZE, SIZE, dtype=torch.uint8))


def test_exporting_without_head_removes_the_previous_head_file(encoder, cfg, tmp_path):
    export_encoder(encoder, cfg, "torchvision", tmp_path / "enc.pt", include_head=True)
    assert isinstance(load_exported(tmp_path / "enc.pt")(batch(2)), tuple)
    export_encoder(encoder, cfg, "torchvision", tmp_path / "enc.pt")
    assert not (tmp_path / "enc-head.pt").exists()
    assert isinstance(load_exported(tmp_path / "enc.pt")(batch(2)), torch.Tensor)


# ----------------------------------------------------------------------------- bad input


def test_missing_onnx_names_the_extra_and_the_command(encoder, cfg, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # makes `import onnx` fail
    with pytest.raises(MissingExtra) as info:
        export_encoder(encoder, cfg, "onnx", tmp_path / "enc.onnx")
    message = str(info.value)
    assert "onnx extra" in message and "pip install 'contrastive-explorer[onnx]'" in message
    assert list(tmp_path.iterdir()) == []


def test_missing_safetensors_names_the_extra(encoder, cfg, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors", None)
    with pytest.raises(MissingExtra, match=r"contrastive-explorer\[safetensors\]"):
        export_encoder(encoder, cfg, "safetensors", tmp_path / "enc")


def test_unknown_format_lists_the_formats(encoder, cfg, tmp_path):
    with pytest.raises(ExportError) as info:
        export_encoder(encoder, cfg, "keras", tmp_path / "enc")
    assert all(fmt in str(info.value) for fmt in FORMATS)


def test_unwritable_folder_is_named(encoder, cfg, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")  # a file where the folder should be: fails even as root
    with pytest.raises(ExportError, match="not-a-folder"):
        export_encoder(encoder, cfg, "torchvision", blocker / "enc.pt")


def test_suffix_is_added_or_refused(tmp_path):
    assert export_path(tmp_path / "enc", "onnx") == tmp_path / "enc.onnx"
    assert export_path(tmp_path / "enc.v2", "torchvision") == tmp_path / "enc.v2.pt"
    assert export_path(tmp_path / "enc.PT", "torchvision") == tmp_path / "enc.PT"
    with pytest.raises(ExportError, match=r"\.torchscript"):
        export_path(tmp_path / "enc.pt", "torchscript")
    with pytest.raises(ExportError, match=r"\.pt\b"):
        export_path(tmp_path / "enc.onnx", "torchvision")


def test_config_that_does_not_match_the_encoder_is_refused(encoder, tmp_path):
    with pytest.raises(ExportError, match="resnet34"):
        export_encoder(encoder, make_cfg("resnet34"), "torchvision", tmp_path / "enc.pt")
    with pytest.raises(ExportError, match="automatic values"):
        export_encoder(encoder, TrainConfig(), "torchvision", tmp_path / "enc.pt")


def test_load_exported_refuses_unknown_files(tmp_path):
    with pytest.raises(ExportError, match="cannot tell the format"):
        load_exported(tmp_path / "enc.bin")
    (tmp_path / "enc.pt").write_bytes(b"not a state dict")
    with pytest.raises(ExportError, match="not readable"):
        load_exported(tmp_path / "enc.pt")
