"""Contrastive Explorer's desktop application (PySide6 + pyqtgraph).

It shows data, curves and maps, and drives the training engine in a child process; it
never trains in its own process.
"""
