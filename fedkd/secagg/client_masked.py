"""Client stage 3: open the neighbours' shares, report the bad ones, send the masked input.

A sender whose ciphertext does not open under the directed key, or whose shares do not match
the commitments it made to them, is left out: this client holds none of its shares and adds
no mask for it, and reports it with the masked input. The report is verifiable without
revealing anything of this client's own: when the sender's signature on the ciphertext
verifies (it is the sender's own work, not the server's), the report carries this client's
receive key for that one sender, which opens that one direction and nothing else; without a
valid signature it carries nothing (the server, which holds the original, checks the
signature itself). :mod:`fedkd.secagg.accusation` decides who lied. A malicious sender thus
costs the round itself only, and a client cannot frame an honest sender.
"""

from __future__ import annotations

import numpy as np

import fedkd.secagg.auth as auth
import fedkd.secagg.crypto as crypto
import fedkd.secagg.merkle as merkle
from fedkd.dp.mechanisms import add_noise_share
from fedkd.secagg.accusation import open_shares, sender_recipients
from fedkd.secagg.client_checks import expect_stage, refusals
from fedkd.secagg.client_state import ClientState, HeldShares
from fedkd.secagg.errors import (
    AuthenticationFailure,
    InconsistentLists,
    ReplayedRequest,
    TooFewSurvivors,
    UnknownPeer,
)
from fedkd.secagg.masking import MaskExpander, mask_vector
from fedkd.secagg.message import Stage
from fedkd.secagg.packing import reduce_words
from fedkd.secagg.wire import MaskedInput, MaskedInputRequest

__all__ = ["client_masked_input", "pair_seeds"]


def _signed_by_sender(state: ClientState, request: MaskedInputRequest, index: int) -> bool:
    """Whether the sender signed exactly this ciphertext and these commitments for this client."""
    config, roster = state.config, state.roster
    assert config is not None and roster is not None
    sender = request.senders[index]
    if len(request.signatures) != len(request.senders) or len(request.paths) != len(
        request.senders
    ):
        return False
    order = sender_recipients(config, sender, state.advertised)
    if state.node_id not in order:
        return False
    commitments = request.commitments[index] if request.commitments else b""
    leaf = auth.ciphertext_leaf(sender, state.node_id, request.ciphertexts[index], commitments)
    root = merkle.climb(len(order), order.index(state.node_id), leaf, request.paths[index])
    name = state.identities.get(sender)
    return (
        root is not None
        and name is not None
        and roster.verifies(
            name, auth.ciphertexts_message(config, sender, root), request.signatures[index]
        )
    )


def _open_all(
    state: ClientState, request: MaskedInputRequest
) -> tuple[dict[int, HeldShares], list[int], list[bytes]]:
    """The shares that opened, and the senders accused with their evidence."""
    config = state.config
    assert config is not None
    if len(set(request.senders)) != len(request.senders):
        raise InconsistentLists("the masked-input request lists a sender more than once")
    strangers = sorted(set(request.senders) - set(state.peer_keys))
    if strangers:
        raise UnknownPeer(f"shares from {strangers}, who are not neighbours that advertised keys")
    context, me = config.key_context(), state.node_id
    opened: dict[int, HeldShares] = {}
    accused, evidence = [], []
    for index, (sender, sealed) in enumerate(
        zip(request.senders, request.ciphertexts, strict=True)
    ):
        receive_private = state.receive_private[sender]
        key = crypto.derive_directed_key(
            crypto.agree(state.loaded_key(receive_private), state.peer_keys[sender].cipher_public),
            label=crypto.DIRECTED_SHARE_LABEL,
            context=context,
            sender=sender,
            recipient=me,
        )
        commitments = request.commitments[index] if request.commitments else b""
        try:
            opened[sender] = open_shares(
                key, sealed, commitments, context=context, sender=sender, recipient=me
            )
            state.received_keys[sender] = key
        except AuthenticationFailure:
            accused.append(sender)
            proven = state.roster is None or _signed_by_sender(state, request, index)
            evidence.append(receive_private if proven else b"")
    return opened, accused, evidence


def client_masked_input(
    state: ClientState,
    request: MaskedInputRequest,
    values: np.ndarray,
    noise_rng: np.random.Generator | None = None,
) -> MaskedInput:
    """Stage 3: open the received shares, then send the masked quantized input.

    Parameters
    ----------
    state : ClientState
        After :func:`fedkd.secagg.client.client_share_keys`.
    request : MaskedInputRequest
        Ciphertexts addressed to this client by the neighbours that shared keys.
    values : np.ndarray
        Float input of length ``config.vector_length`` (e.g. ``concat([w * x, w])``).
    noise_rng : np.random.Generator | None
        Draws the distributed-DP noise share (``None``: OS entropy); a node seeds it from its
        own secret so a repeated release repeats its noise.

    Returns
    -------
    MaskedInput
        ``q(x) + PRG(b) + sum_v +-PRG(s_uv)`` modulo ``2**64`` over the senders whose shares
        opened, and the accusations against the others.

    Raises
    ------
    ValueError
        When ``values`` has the wrong length or non-finite entries (the round stays usable).
    RefusedRequest
        ``ReplayedRequest`` when a masked input was already sent for this round,
        ``TooFewSurvivors`` when fewer than ``threshold`` holders (this client included) sent
        shares that opened.
    """
    with refusals(state):
        if state.stage in (Stage.MASKED_INPUT, Stage.CONSISTENCY, Stage.UNMASK):
            raise ReplayedRequest(
                f"client {state.node_id} already sent its masked input for "
                "this round; a second one would reveal its input"
            )
        expect_stage(state, Stage.SHARE_KEYS, "masked-input")
    config = state.config
    assert config is not None
    if np.shape(values) != (config.vector_length,):
        raise ValueError(
            f"input has shape {np.shape(values)}; the round expects ({config.vector_length},)"
        )
    quantized = config.quantizer.encode(values)
    # Distributed DP: this client's integer noise share joins its levels before any mask, so
    # no one (the server included) ever sees its input with less than its own share of noise.
    levels = add_noise_share(quantized.values, config.noise_variance, noise_rng)
    with refusals(state):
        opened, accused, evidence = _open_all(state, request)
        senders = (state.node_id, *opened)
        if len(senders) < config.threshold:
            raise TooFewSurvivors(
                f"only {len(senders)} of this client's share holders sent shares that "
                f"opened, fewer than the threshold {config.threshold}"
            )
        masked = mask_vector(
            levels,
            node_id=state.node_id,
            self_seed=state.self_seed,
            pair_seeds=pair_seeds(state, list(opened)),
            expander=MaskExpander(config.vector_length),
        )
        reduce_words(masked, config.modulus_bits)  # Z_{2^64} -> Z_{2^k}: what the wire carries
        state.held.update(opened)
        state.share_senders = tuple(sorted(senders))
        state.accused = tuple(sorted(accused))
        state.clipped_fraction = quantized.clipped_fraction
        state.stage = Stage.MASKED_INPUT
        state.spent_rounds.add((config.run_id, config.round))
        return MaskedInput(state.node_id, masked, tuple(accused), tuple(evidence))


def pair_seeds(state: ClientState, peers: list[int]) -> dict[int, bytes]:
    """The pairwise mask seeds this client shares with ``peers`` (both sides derive them)."""
    config = state.config
    assert config is not None
    context = config.key_context()
    mask_private = state.loaded_key(state.mask_private)
    return {
        peer: crypto.derive_key(
            crypto.agree(mask_private, state.peer_keys[peer].mask_public),
            label=crypto.MASK_SEED_LABEL,
            context=context,
            first=state.node_id,
            second=peer,
        )
        for peer in peers
    }
