"""Reports of bad shares (stage 3): opening one direction's ciphertext, and judging a report.

A client that cannot open a sender's shares, or finds them unlike the sender's commitments,
reports the sender with its masked input (:mod:`fedkd.secagg.client_masked`). The server,
which holds the sender's original ciphertexts, commitments and signature, decides who lied:

* the report carries the reporter's receive key for that sender (the private half of the
  one key that sender encrypted to): if it is not the key the reporter advertised, the
  reporter lied; otherwise it opens the original ciphertext, and the sender lied when that
  fails or the shares differ from its commitments, the reporter when it succeeds;
* the report carries nothing (the sender's signature did not verify at the reporter): the
  sender lied when the ciphertext, commitments, path and signature it sent (the server relays
  them unchanged) do not verify either, the reporter when they do.

An honest sender's ciphertext always opens under the right key and its signature always
verifies, so no report can get it dropped; an honest reporter reveals a receive key only for a
ciphertext whose sender signed it, so the key opens nothing the sender did not make.
"""

from __future__ import annotations

import fedkd.secagg.auth as auth
import fedkd.secagg.crypto as crypto
import fedkd.secagg.merkle as merkle
import fedkd.secagg.shamir as shamir
from fedkd.secagg.client_state import HeldShares
from fedkd.secagg.config import SecAggConfig
from fedkd.secagg.errors import AuthenticationFailure, SecAggError
from fedkd.secagg.server_state import ServerState
from fedkd.secagg.wire import EncryptedShares

__all__ = ["ciphertext_tree", "judge", "open_shares", "sender_recipients"]


def sender_recipients(config: SecAggConfig, sender: int, advertised: tuple[int, ...]) -> list[int]:
    """The clients ``sender`` encrypts shares to, in its order: its neighbours that advertised."""
    present = set(advertised)
    return [v for v in config.neighbours_of(sender) if v in present]


def ciphertext_leaf_of(reply: EncryptedShares, index: int) -> bytes:
    """The leaf of recipient ``index``'s ciphertext in its sender's signed tree."""
    recipient, sealed = reply.recipients[index], reply.ciphertexts[index]
    return auth.ciphertext_leaf(reply.node_id, recipient, sealed, reply.commitments_for(index))


def ciphertext_tree(reply: EncryptedShares) -> merkle.Tree:
    """The Merkle tree a sender signs over its ciphertexts (recipient order)."""
    return merkle.Tree([ciphertext_leaf_of(reply, i) for i in range(len(reply.recipients))])


def open_shares(
    key: bytes, sealed: bytes, commitments: bytes, *, context: bytes, sender: int, recipient: int
) -> HeldShares:
    """Decrypt one sender's shares for ``recipient`` and check them against its commitments.

    Raises
    ------
    AuthenticationFailure
        When the ciphertext does not authenticate, the shares are malformed, or they differ
        from what the sender committed to.
    """
    plain = crypto.decrypt_share(
        key, sealed, context=context, sender=sender, recipient=recipient, extra=commitments
    )
    width = shamir.SHARE_BYTES
    if len(plain) != 2 * width or len(commitments) != 64:
        raise AuthenticationFailure(f"the shares from client {sender} have the wrong size")
    try:
        held = HeldShares(
            shamir.share_from_bytes(plain[:width]), shamir.share_from_bytes(plain[width:])
        )
    except ValueError as error:
        raise AuthenticationFailure(f"the shares from client {sender}: {error}") from None
    for offset, kind, raw in (
        (0, auth.SEED_SHARE, plain[:width]),
        (32, auth.KEY_SHARE, plain[width:]),
    ):
        if commitments[offset : offset + 32] != auth.share_commitment(
            context, sender, recipient, kind, raw
        ):
            raise AuthenticationFailure(
                f"the shares from client {sender} differ from its commitments to them"
            )
    return held


def _signed(state: ServerState, sender: int, index: int) -> bool | None:
    """Whether ``sender`` signed the ciphertext it sent recipient ``index``, as relayed: the
    leaf and the path it shipped lead to a root its signature covers (``None``: no roster)."""
    if state.roster is None:
        return None
    reply = state.shares[sender]
    leaf = ciphertext_leaf_of(reply, index)
    root = merkle.climb(len(reply.recipients), index, leaf, reply.paths[index])
    message = auth.ciphertexts_message(state.config, sender, root or b"")
    return root is not None and state.roster.verifies(
        state.advertised[sender].identity, message, reply.signature
    )


def judge(state: ServerState, reporter: int, sender: int, evidence: bytes) -> list[tuple[int, str]]:
    """Who lied in ``reporter``'s report of ``sender`` (both, when it cannot be told)."""
    shares = state.shares.get(sender)
    if shares is None or sender not in state.routed.get(reporter, ()):
        return [(reporter, f"reported client {sender}, whose shares it was not sent")]
    if not evidence:
        if not state.config.authenticated:
            return [(reporter, f"reported client {sender} without its receive key")]
        signed = _signed(state, sender, shares.recipients.index(reporter))
        if signed is None:
            why = "a report the server cannot check without the roster"
            return [(reporter, why), (sender, why)]
        if signed:
            return [(reporter, f"reported client {sender}'s valid signature as invalid")]
        return [(sender, f"signed its ciphertexts wrongly (reported by client {reporter})")]
    config, index = state.config, shares.recipients.index(reporter)
    position = config.neighbours_of(reporter).index(sender)
    try:
        valid_key = (
            crypto.public_from_private(evidence)
            == (state.advertised[reporter].receive_publics[position])
        )
        key = crypto.derive_directed_key(
            crypto.agree(evidence, state.advertised[sender].cipher_public),
            label=crypto.DIRECTED_SHARE_LABEL,
            context=config.key_context(),
            sender=sender,
            recipient=reporter,
        )
    except (ValueError, SecAggError):
        valid_key = False
    if not valid_key:
        return [(reporter, f"reported client {sender} with a key that is not its receive key")]
    try:
        open_shares(
            key,
            shares.ciphertexts[index],
            shares.commitments_for(index),
            context=config.key_context(),
            sender=sender,
            recipient=reporter,
        )
    except AuthenticationFailure:
        return [
            (sender, f"sent client {reporter} shares that do not open or match its commitments")
        ]
    return [(reporter, f"reported client {sender}'s valid shares as bad")]
