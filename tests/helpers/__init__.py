"""Helpers shared by the test modules: generated image folders (folders), the tiny training
settings (settings), short training runs (training) and the fault tests' run folders and
fixtures (faults). Test modules import from here, never from one another."""
