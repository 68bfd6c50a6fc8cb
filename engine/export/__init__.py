"""Export a trained encoder in a form other code can load, checked against the engine.

Formats (:data:`FORMATS`) and the file each writes (the suffix is fixed per format, see
:func:`export_path`):

- ``torchvision`` (``.pt``): the backbone's ``state_dict`` alone, with exactly the keys of
  ``torchvision.models.<arch>()`` minus ``fc``; loads with ``weights_only=True``.
- ``torchscript`` (``.torchscript``): a traced module, any batch size; needs only torch.
  (torch 2.14 marks torch.jit deprecated in favour of torch.export; TorchScript is still
  what most C++, mobile and serving code loads, so it is offered while torch keeps it.)
- ``onnx`` (``.onnx``): opset 17, dynamic batch axis, input ``images``, outputs ``h`` (and
  ``z``); needs the ``onnx`` extra.
- ``safetensors`` (``.safetensors``): the same tensors as the torchvision format; needs the
  ``safetensors`` extra.

With ``include_head`` the traced/ONNX module returns ``(h, z)``; the two weight formats put
the projection head into a second file ``<stem>-head<suffix>`` whose keys load into a plain
``torch.nn.Sequential``.

Beside every export, ``<file name>.json`` holds the metadata (:mod:`.metadata`), including
``load_snippet``: a script that loads the file by its absolute path with the format's own
library, runs it on a dummy batch and prints the output shapes (:mod:`.loading`). After
writing (:mod:`.formats`), the export is loaded back from disk and compared with the
engine's own encoder (:mod:`.verification`); if it differs by more than the tolerance, the
files are kept for inspection, the metadata says ``"passed": false`` and
:class:`ExportError` is raised: a broken export is never reported as usable.
"""

from engine.export.encoder import ExportResult, export_encoder
from engine.export.formats import (
    EMBEDDING_SUFFIXES,
    FORMATS,
    ONNX_OPSET,
    SUFFIXES,
    ExportError,
    MissingExtra,
    export_path,
    require_extras,
    write_embeddings,
)
from engine.export.loading import (
    Outputs,
    embeddings_snippet,
    encoder_snippet,
    load_exported,
)
from engine.export.metadata import (
    METADATA_VERSION,
    embeddings_metadata,
    metadata_path_of,
    write_metadata,
)
from engine.export.verification import (
    FP32_TOLERANCE,
    ONNX_TOLERANCE,
    VERIFY_BATCH,
    VERIFY_SEED,
)

_require_extras = require_extras  # the name tests/app/test_export_dialog.py imports

__all__ = [
    "EMBEDDING_SUFFIXES", "FORMATS", "FP32_TOLERANCE", "METADATA_VERSION", "ONNX_OPSET",
    "ONNX_TOLERANCE", "SUFFIXES", "VERIFY_BATCH", "VERIFY_SEED", "ExportError",
    "ExportResult", "MissingExtra", "Outputs", "embeddings_metadata", "embeddings_snippet",
    "encoder_snippet", "export_encoder", "export_path", "load_exported", "metadata_path_of",
    "require_extras", "write_embeddings", "write_metadata",
]
