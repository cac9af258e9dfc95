"""Shared test settings: one torch thread per test process (pytest-xdist runs two)."""

import torch

torch.set_num_threads(1)
