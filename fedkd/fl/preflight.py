"""The checks that need the machine, made before any work: the data, the clients, the device.

:func:`~fedkd.fl.config.parse_run_config` checks a run config on its own; :func:`preflight` adds
what only the machine can say: the data is there and large enough for the clients, the device
exists. Apart from :mod:`fedkd.fl.config` because it loads the data (:mod:`fedkd.fl.data`),
which itself reads the config.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedkd.fl.config import FedConfig, parse_run_config
from fedkd.fl.data import load_run_split
from fedkd.tracking import check_installed, parse_log


def preflight(run_config: Mapping[str, Any], num_clients: int) -> FedConfig:
    """Every check that can be made before any work: the config, the data, the device.

    Parameters
    ----------
    run_config
        The flat run config (defaults for keys left out).
    num_clients
        How many clients (SuperNodes, partitions) the federation has.

    Returns
    -------
    FedConfig
        The parsed config.

    Raises
    ------
    ValueError
        With a one-line message naming the key (or the data) and what is accepted, or the
        ``pip install`` a selected tracker (``log``) needs.
    """
    config = parse_run_config(run_config)
    check_installed(parse_log(config.log))
    if num_clients < config.min_clients:
        raise ValueError(
            f"run config 'min-clients' = {config.min_clients} but the federation has "
            f"{num_clients} client(s); lower 'min-clients' or start more SuperNodes"
        )
    if config.distill.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ValueError("run config 'device' = 'cuda' but PyTorch sees no CUDA device")
    if config.local.device == "cuda" and config.dp.client_dp_sgd:
        raise ValueError(
            "run config 'client-device' = 'cuda' with 'client-dp-sgd': DP-SGD "
            "clients train on the CPU; use client-device=cpu"
        )
    try:
        split = load_run_split(config)
    except (OSError, ValueError) as problem:
        raise ValueError(f"dataset '{config.data.dataset}' cannot be loaded: {problem}") from None
    on_demand = config.data.partitioner == "population"  # shards drawn with replacement
    if config.method != "central" and not on_demand and num_clients > len(split.private):
        raise ValueError(
            f"{num_clients} clients but the private pool of '{config.data.dataset}' holds only "
            f"{len(split.private)} samples; use more data ('split-private') or fewer clients"
        )
    return config
