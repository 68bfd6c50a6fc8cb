"""Contrastive Explorer's training engine: PyTorch + torchvision, no GUI.

Usable as a library (``engine.training.loop.train``), as a command line (``contrastive-engine``,
``python -m engine``) and, later, under torchrun. Never imports Qt.
"""

__version__ = "0.1.0"
