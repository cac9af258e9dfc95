"""Secure aggregation (Bonawitz et al. 2017, SecAgg+ of Bell et al. 2020), transport-agnostic.

Modules: :mod:`config` (public round parameters and their digest), :mod:`crypto` (X25519, HKDF,
AES-GCM), :mod:`shamir` (secret sharing), :mod:`quantize` (fixed-point codec), :mod:`masking`
(AES-CTR mask expansion), :mod:`graph` (SecAgg+ neighbours), :mod:`merkle` (one signature
over per-neighbour values), :mod:`message` and :mod:`wire` (messages), :mod:`identity`
(Ed25519 identities, the roster and its files), :mod:`auth` (what is signed, tagged and
committed), :mod:`accusation` (reports of bad shares), :mod:`client_state`, :mod:`client`,
:mod:`client_masked`, :mod:`client_unmask`, :mod:`server`, :mod:`server_masked`,
:mod:`server_unmask` (stage functions), :mod:`protocol` (the stage sequence over a transport),
:mod:`driver` (in-process runs), :mod:`errors`. Imports numpy, cryptography and the standard
library only. What attacks it (a malicious server's wrappers, what they release) lives in
:mod:`fedkd.attacks.secagg`, outside this public API.
"""

from fedkd.secagg.client import client_advertise, client_share_keys
from fedkd.secagg.client_masked import client_masked_input
from fedkd.secagg.client_state import ClientState, decode_client_state, encode_client_state
from fedkd.secagg.client_unmask import client_consistency, client_unmask
from fedkd.secagg.config import SecAggConfig, majority_threshold
from fedkd.secagg.errors import (
    ConfigError,
    ProtocolAbort,
    RefusedRequest,
    ReplayedRequest,
    SecAggError,
)
from fedkd.secagg.identity import (
    Identity,
    Roster,
    read_identity,
    read_roster,
    simulated_identities,
    write_identity,
    write_roster,
)
from fedkd.secagg.server import (
    AggregateResult,
    ServerState,
    server_advertise_request,
    server_collect_keys,
    server_collect_masked,
    server_collect_signatures,
    server_consistency_request,
    server_route_shares,
    server_unmask,
)
from fedkd.secagg.wire import Stage

__all__ = [
    "AggregateResult",
    "ClientState",
    "ConfigError",
    "Identity",
    "ProtocolAbort",
    "RefusedRequest",
    "ReplayedRequest",
    "Roster",
    "SecAggConfig",
    "SecAggError",
    "ServerState",
    "Stage",
    "client_advertise",
    "client_consistency",
    "client_masked_input",
    "client_share_keys",
    "client_unmask",
    "decode_client_state",
    "encode_client_state",
    "majority_threshold",
    "read_identity",
    "read_roster",
    "server_advertise_request",
    "server_collect_keys",
    "server_collect_masked",
    "server_collect_signatures",
    "server_consistency_request",
    "server_route_shares",
    "server_unmask",
    "simulated_identities",
    "write_identity",
    "write_roster",
]
