"""The formats the Export dialog offers, with the tooltip that says who loads each and how."""

from __future__ import annotations

from engine.evaluate.explore import EMBEDDING_FORMATS
from engine.export import SUFFIXES

#: Formats offered: (engine --format value, label shown, tooltip: who can load it and how).
FORMATS: list[tuple[str, str, str]] = [
    ("torchvision", "torchvision state_dict (.pt)",
     "The backbone's weights with exactly the keys of torchvision.models.<arch>() minus fc. "
     "Anyone with torch + torchvision loads it: build the ResNet (small-image stem as the "
     "metadata says), set fc = nn.Identity(), load_state_dict(torch.load(file, "
     "weights_only=True), strict=True). Best for fine-tuning in PyTorch."),
    ("torchscript", "TorchScript (.torchscript)",
     "A traced model that needs only torch (no model code): torch.jit.load(file) in Python, "
     "or torch::jit::load in C++ (LibTorch), mobile and serving runtimes."),
    ("onnx", "ONNX (.onnx)",
     "An ONNX graph (opset 17, input 'images', dynamic batch) for onnxruntime, TensorRT, "
     "OpenVINO and other runtimes, in any language: onnxruntime.InferenceSession(file). "
     "Needs the onnx extra: pip install 'contrastive-explorer[onnx]'."),
    ("safetensors", "safetensors (.safetensors)",
     "The same tensors as the torchvision format in the safetensors file format (no pickle; "
     "Hugging Face tools read it): safetensors.torch.load_file(file) into the torchvision "
     "ResNet. Needs the safetensors extra: pip install 'contrastive-explorer[safetensors]'."),
    ("npy", "embeddings (.npy)",
     "The embedding of every image of the run's folder as one float32 matrix (images x "
     "dimensions), in the folder's order: numpy.load(file). Paths, labels and classes are "
     "in the metadata JSON beside it and in embeddings/<checkpoint>/index.json."),
    ("csv", "embeddings (.csv)",
     "One row per image: path, label, class, then the vector; opens in pandas "
     "(pandas.read_csv), R, or a spreadsheet. Values keep 7 significant digits."),
]
ALL_SUFFIXES = {*SUFFIXES.values(), ".npy", ".csv"}


def suffix_of(fmt: str) -> str:
    """The file suffix the engine writes for ``fmt``."""
    return f".{fmt}" if fmt in EMBEDDING_FORMATS else SUFFIXES[fmt]
