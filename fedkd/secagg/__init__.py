"""Secure aggregation (Bonawitz et al. 2017, SecAgg+ of Bell et al. 2020), transport-agnostic.

Modules: :mod:`config` (public round parameters and their digest), :mod:`crypto` (X25519, HKDF,
AES-GCM), :mod:`shamir` (secret sharing), :mod:`quantize` (fixed-point codec), :mod:`masking`
(AES-CTR mask expansion), :mod:`graph` (SecAgg+ neighbours), :mod:`wire` (messages),
:mod:`client_state`, :mod:`client` and :mod:`server` (stage functions), :mod:`driver` (in-process
runs), :mod:`errors`. Imports numpy, cryptography and the standard library only.
"""

from fedkd.secagg.client import (
    client_advertise,
    client_masked_input,
    client_share_keys,
    client_unmask,
)
from fedkd.secagg.client_state import ClientState, decode_client_state, encode_client_state
from fedkd.secagg.config import SecAggConfig, majority_threshold
from fedkd.secagg.driver import DriverResult, MaliciousServer, run_secagg
from fedkd.secagg.errors import ConfigError, ProtocolAbort, RefusedRequest, SecAggError
from fedkd.secagg.server import (
    AggregateResult,
    ServerState,
    server_advertise_request,
    server_collect_keys,
    server_collect_masked,
    server_route_shares,
    server_unmask,
)
from fedkd.secagg.wire import Stage

__all__ = [
    "AggregateResult",
    "ClientState",
    "ConfigError",
    "DriverResult",
    "MaliciousServer",
    "ProtocolAbort",
    "RefusedRequest",
    "SecAggConfig",
    "SecAggError",
    "ServerState",
    "Stage",
    "client_advertise",
    "client_masked_input",
    "client_share_keys",
    "client_unmask",
    "decode_client_state",
    "encode_client_state",
    "majority_threshold",
    "run_secagg",
    "server_advertise_request",
    "server_collect_keys",
    "server_collect_masked",
    "server_route_shares",
    "server_unmask",
]
