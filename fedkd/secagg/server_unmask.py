"""Stage 4 on the server: collect the revealed shares, reconstruct the secrets, strip the masks.

Survivors' self masks are removed with their reconstructed seeds ``b``. A dropped client's
pairwise masks are removed with its mask key ``s_sk`` rebuilt from its shares (checked against
the key it advertised), or, when that key cannot be rebuilt (it dealt bad shares and was
dropped for it), with the seeds its surviving partners revealed. Every
revealed share is attributable: its owner committed to it in stage 2
(``EncryptedShares.share_commitments``). When a reconstructed secret contradicts its
commitment, the server checks that owner's shares one by one, drops every holder whose share
does not match (``state.liars``, reason in ``state.rejected``) and reconstructs from the others
when ``threshold`` good shares remain. A self-mask seed whose good shares agree on one secret
that is not the committed one is used anyway (its owner committed to garbage, its shares decide);
shares that agree on no secret end the round, naming their owner.
"""

from __future__ import annotations

from collections.abc import Sequence

import fedkd.secagg.auth as auth
import fedkd.secagg.crypto as crypto
import fedkd.secagg.shamir as shamir
from fedkd.secagg.client_checks import self_mask_commitment
from fedkd.secagg.config import SecAggConfig
from fedkd.secagg.errors import ProtocolAbort
from fedkd.secagg.masking import MaskExpander, pair_adds
from fedkd.secagg.packing import reduce_words
from fedkd.secagg.server_state import AggregateResult, ServerState
from fedkd.secagg.wire import UnmaskReply


def _reply_problem(state: ServerState, reply: UnmaskReply) -> str | None:
    config, holder = state.config, reply.node_id
    if holder not in state.survivors:
        return f"unmask reply from client {holder}, who is not a survivor"
    if holder in state.unmasked:
        return f"a second unmask reply from client {holder}"
    survivors, dropped = set(state.survivors), set(state.dropped)
    for owners, expected in ((reply.self_mask_owners, survivors), (reply.key_owners, dropped)):
        if len(set(owners)) != len(owners):
            return f"client {holder} sent two shares of one owner"
        for owner in owners:
            if owner not in expected or holder not in config.holders_of(owner):
                return f"client {holder} sent a share of client {owner} it cannot hold"
    partners = reply.pair_partners
    if len(set(partners)) != len(partners) or any(len(s) != 32 for s in reply.pair_seeds):
        return f"client {holder} sent malformed pairwise seeds"
    for partner in partners:
        if partner not in dropped or holder not in state.partners(partner):
            return f"client {holder} sent a pairwise seed for client {partner}, not its partner"
    return None


def _record_reply(state: ServerState, reply: UnmaskReply) -> None:
    """Keep a reply's shares, or drop the holder when the reply is inconsistent or malformed."""
    problem = _reply_problem(state, reply)
    parsed: list[tuple[dict[int, dict[int, int]], int, int]] = []
    if problem is None:
        try:
            for store, owners, raws in (
                (state.self_mask_shares, reply.self_mask_owners, reply.self_mask_shares),
                (state.key_shares, reply.key_owners, reply.key_shares),
            ):
                for owner, raw in zip(owners, raws, strict=True):
                    parsed.append((store, owner, shamir.share_from_bytes(raw)))
        except ValueError as error:
            problem = f"client {reply.node_id} sent a malformed share: {error}"
    if problem is not None:
        state.reject(reply.node_id, problem)
        return
    state.unmasked.add(reply.node_id)
    for store, owner, value in parsed:
        store.setdefault(owner, {})[reply.node_id] = value
    for partner, seed in zip(reply.pair_partners, reply.pair_seeds, strict=True):
        state.pair_seeds[(reply.node_id, partner)] = seed


def _matches(state: ServerState, owner: int, holder: int, kind: bytes, value: int) -> bool:
    sealed = state.shares[owner]
    try:
        index = 2 * sealed.holders.index(holder) + (0 if kind == auth.SEED_SHARE else 1)
    except ValueError:
        return False
    share = shamir.share_to_bytes(value)
    expected = auth.share_commitment(state.config.key_context(), owner, holder, kind, share)
    return sealed.share_commitments[index] == expected


def _combine(config: SecAggConfig, shares: dict[int, int]) -> bytes | None:
    holders = sorted(shares)[: config.threshold]
    try:
        return shamir.combine_shares(
            [config.share_x(h) for h in holders], [shares[h] for h in holders]
        )
    except ProtocolAbort:
        return None


def _good_shares(state: ServerState, owner: int, kind: bytes) -> dict[int, int]:
    config = state.config
    store = state.self_mask_shares if kind == auth.SEED_SHARE else state.key_shares
    shares = {h: v for h, v in store.get(owner, {}).items() if h not in state.liars}
    if len(shares) < config.threshold:
        what = "self-mask seed" if kind == auth.SEED_SHARE else "mask key"
        raise ProtocolAbort(
            f"only {len(shares)} good shares of client {owner}'s {what} arrived, fewer "
            f"than the threshold {config.threshold}; the round cannot complete"
        )
    return shares


def _drop_liars(state: ServerState, owner: int, kind: bytes, shares: dict[int, int]) -> None:
    what = "self-mask seed" if kind == auth.SEED_SHARE else "mask key"
    for holder, value in list(shares.items()):
        if not _matches(state, owner, holder, kind, value):
            state.liars.add(holder)
            state.reject(
                holder, f"revealed a share of client {owner}'s {what} unlike its owner's commitment"
            )
            del shares[holder]


def _reconstruct(state: ServerState, owner: int, kind: bytes) -> bytes | None:
    """The secret ``kind`` of ``owner``, dropping holders whose share contradicts the commitment.

    ``None`` for a mask key whose good shares do not rebuild the advertised key (its owner
    dealt bad shares: the caller uses the pairwise seeds instead).
    """
    config = state.config
    shares = _good_shares(state, owner, kind)
    secret = _combine(config, shares)
    if secret is not None and _verifies(state, owner, kind, secret):
        return secret
    _drop_liars(state, owner, kind, shares)
    shares = _good_shares(state, owner, kind)
    secret = _combine(config, shares)
    if secret is not None and _verifies(state, owner, kind, secret):
        return secret
    if kind == auth.KEY_SHARE:
        return None
    holders = sorted(shares)
    xs, ys = [config.share_x(h) for h in holders], [shares[h] for h in holders]
    if secret is None or not shamir.consistent(xs, ys, config.threshold):
        raise ProtocolAbort(
            f"client {owner} dealt shares of its self-mask seed that agree on no secret; "
            "the round cannot complete"
        )
    return secret  # its commitment is wrong, its shares agree: they decide


def _verifies(state: ServerState, owner: int, kind: bytes, secret: bytes) -> bool:
    context = state.config.key_context()
    if kind == auth.SEED_SHARE:
        return (
            self_mask_commitment(context, owner, secret) == state.shares[owner].self_mask_commitment
        )
    return crypto.public_from_private(secret) == state.advertised[owner].mask_public


def _pair_seeds(state: ServerState, owner: int, context: bytes) -> dict[int, bytes]:
    """The seed of every mask a survivor added for dropped ``owner``.

    From ``owner``'s mask key rebuilt from its shares when it can be (checked against the key
    it advertised), else the seeds the survivors revealed themselves (``owner`` dealt shares
    of no valid key, or too few arrived).
    """
    partners = state.partners(owner)
    if not partners:
        return {}
    try:
        key = _reconstruct(state, owner, auth.KEY_SHARE)
    except ProtocolAbort:
        key = None
    if key is not None:
        loaded = crypto.load_private(key)
        return {
            partner: crypto.derive_key(
                crypto.agree(loaded, state.advertised[partner].mask_public),
                label=crypto.MASK_SEED_LABEL,
                context=context,
                first=owner,
                second=partner,
            )
            for partner in partners
        }
    missing = [v for v in partners if (v, owner) not in state.pair_seeds]
    if missing:
        raise ProtocolAbort(
            f"client {owner}'s mask key cannot be rebuilt from its shares, and clients "
            f"{missing} masked with it but did not reveal their seeds; the round cannot complete"
        )
    return {partner: state.pair_seeds[(partner, owner)] for partner in partners}


def server_unmask(state: ServerState, replies: Sequence[UnmaskReply]) -> AggregateResult:
    """Stage 4: reconstruct the secrets, strip the masks and decode the sum.

    Raises
    ------
    ProtocolAbort
        When a needed secret has fewer than ``threshold`` good shares.
    """
    config = state.config
    if state.masked_sum is None:
        raise ProtocolAbort("server_unmask called before any masked input was collected")
    for reply in replies:
        _record_reply(state, reply)
    context, expander = config.key_context(), MaskExpander(config.vector_length)
    total = state.masked_sum.copy()
    masks: list[tuple[bytes, bool, bool]] = []
    for owner in state.survivors:
        seed = _reconstruct(state, owner, auth.SEED_SHARE)
        assert seed is not None
        masks.append((seed, True, True))
    for owner in state.dropped:
        for partner, seed in _pair_seeds(state, owner, context).items():
            masks.append((seed, pair_adds(partner, owner), False))
    expander.add_many(total, masks)
    reduce_words(total, config.modulus_bits)
    quantizer, count, width = config.quantizer, len(state.survivors), config.modulus_bits
    return AggregateResult(
        total,
        quantizer.decode_sum(total, count, width),
        quantizer.decode_mean(total, count, width),
        state.survivors,
        state.dropped,
    )
