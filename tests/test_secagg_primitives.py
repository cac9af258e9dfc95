"""Crypto binding, PRG masks, SecAgg+ graph, and the package's import boundary."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedkd.secagg import crypto
from fedkd.secagg.config import SecAggConfig
from fedkd.secagg.errors import AuthenticationFailure, ConfigError
from fedkd.secagg.graph import check_degree, neighbour_table, share_holders
from fedkd.secagg.masking import MaskExpander, mask_vector

CONFIG = SecAggConfig(
    run_id=7,
    round=3,
    participants=(1, 2, 3, 4),
    threshold=3,
    neighbours=3,
    clip=4.0,
    vector_length=16,
)


def test_share_encryption_binds_sender_recipient_and_context() -> None:
    a, b = crypto.generate_keypair(), crypto.generate_keypair()
    secret = crypto.agree(a.private, b.public)
    assert secret == crypto.agree(b.private, a.public)
    context = CONFIG.key_context()
    key = crypto.derive_key(
        secret, label=crypto.SHARE_KEY_LABEL, context=context, first=1, second=2
    )
    sealed = crypto.encrypt_share(key, b"shares", context=context, sender=1, recipient=2)
    assert crypto.decrypt_share(key, sealed, context=context, sender=1, recipient=2) == b"shares"
    other_round = dataclasses.replace(CONFIG, round=4).key_context()
    for kwargs in (
        dict(context=context, sender=2, recipient=1),
        dict(context=other_round, sender=1, recipient=2),
    ):
        with pytest.raises(AuthenticationFailure):
            crypto.decrypt_share(key, sealed, **kwargs)  # type: ignore[arg-type]


def test_key_derivation_binds_every_context_field() -> None:
    secret = os.urandom(32)
    variants = [CONFIG] + [
        dataclasses.replace(CONFIG, **change)
        for change in (
            dict(run_id=8),
            dict(round=4),
            dict(participants=(1, 2, 3, 5)),
            dict(public_set_digest=b"\x02" * 32),
            dict(clip=5.0),
            dict(threshold=4),
        )
    ]
    keys = {
        crypto.derive_key(
            secret, label=crypto.MASK_SEED_LABEL, context=c.key_context(), first=1, second=2
        )
        for c in variants
    }
    assert len(keys) == len(variants)
    same = crypto.derive_key(
        secret, label=crypto.MASK_SEED_LABEL, context=CONFIG.key_context(), first=2, second=1
    )
    assert same in keys  # symmetric in the pair


def test_pairwise_masks_cancel_and_self_masks_differ_from_pair_masks() -> None:
    expander = MaskExpander(1000)
    seed, self_a, self_b = os.urandom(32), os.urandom(32), os.urandom(32)
    x, y = np.arange(1000, dtype=np.uint64), np.full(1000, 5, dtype=np.uint64)
    mask_vector(x, node_id=1, self_seed=self_a, pair_seeds={2: seed}, expander=expander)
    mask_vector(y, node_id=2, self_seed=self_b, pair_seeds={1: seed}, expander=expander)
    total = x + y
    expander.add(total, self_a, subtract=True, self_mask=True)
    expander.add(total, self_b, subtract=True, self_mask=True)
    np.testing.assert_array_equal(total, np.arange(1000, dtype=np.uint64) + 5)
    pair = expander.keystream(seed).copy()
    assert not np.array_equal(pair, expander.keystream(seed, self_mask=True))
    assert np.array_equal(pair, MaskExpander(1000).keystream(seed))
    assert len(np.unique(pair)) == 1000  # looks like a keystream, not a constant


def test_graph_is_regular_symmetric_and_deterministic() -> None:
    ids = list(range(100, 131))  # 31 participants
    for k in (2, 4, 10, 30):
        table = neighbour_table(ids, k, seed=5)
        assert all(len(peers) == k and node not in peers for node, peers in table.items())
        assert all(node in table[peer] for node, peers in table.items() for peer in peers)
        assert table == neighbour_table(list(reversed(ids)), k, seed=5)
    assert neighbour_table(ids, 4, seed=5) != neighbour_table(ids, 4, seed=6)
    odd = neighbour_table(list(range(12)), 5, seed=1)
    assert all(len(p) == 5 for p in odd.values())
    assert share_holders(ids, 4, 100, seed=5) == tuple(
        sorted((100, *neighbour_table(ids, 4, 5)[100]))
    )
    with pytest.raises(ConfigError, match="no regular graph"):
        check_degree(31, 5)
    with pytest.raises(ConfigError, match="1 <= neighbours <= 30"):
        check_degree(31, 31)


def test_package_imports_neither_flwr_nor_torch() -> None:
    code = (
        "import sys, fedkd.secagg, fedkd.secagg.driver; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('flwr', 'torch')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_fast_hkdf_is_rfc5869_as_cryptography_computes_it() -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    for size in (0, 1, 31, 32, 33, 200):
        ikm, info = os.urandom(32), os.urandom(size)
        reference = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(ikm)
        assert crypto.hkdf_sha256(ikm, info) == reference


def test_small_order_keys_are_caught_in_every_encoding() -> None:
    p = 2**255 - 19
    for u in crypto.SMALL_ORDER | {p, p + 1}:
        for top in (0, 1 << 255):
            if u | top < 1 << 256:
                assert crypto.is_low_order((u | top).to_bytes(32, "little"))
    for _ in range(50):
        assert not crypto.is_low_order(crypto.generate_keypair().public)
    assert crypto.is_low_order(b"short")


@settings(max_examples=40, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=8), min_size=1, max_size=40), st.data())
def test_a_merkle_path_proves_one_leaf_at_one_index_of_one_tree(
    leaves: list[bytes], data: st.DataObject
) -> None:
    from fedkd.secagg import merkle

    tree = merkle.Tree(leaves)
    index = data.draw(st.integers(0, len(leaves) - 1))
    path = tree.path(index)
    assert merkle.verify(tree.root, len(leaves), index, leaves[index], path)
    assert not merkle.verify(tree.root, len(leaves) + 1, index, leaves[index], path)
    assert not merkle.verify(tree.root, len(leaves), index, leaves[index] + b"x", path)
    other = data.draw(st.integers(0, len(leaves) - 1))
    if leaves[other] != leaves[index]:
        assert not merkle.verify(tree.root, len(leaves), other, leaves[index], tree.path(other))


@pytest.mark.parametrize("length", [1, 7, 16_384, 16_385, 40_000])
def test_masks_applied_block_by_block_equal_masks_applied_one_by_one(length: int) -> None:
    from fedkd.secagg.masking import MaskExpander

    masks = [(os.urandom(32), bool(i % 2), i == 0) for i in range(9)]
    one_by_one = np.arange(length, dtype=np.uint64)
    blocks = one_by_one.copy()
    expander = MaskExpander(length)
    for seed, subtract, self_mask in masks:
        expander.add(one_by_one, seed, subtract=subtract, self_mask=self_mask)
    expander.add_many(blocks, masks)
    np.testing.assert_array_equal(blocks, one_by_one)
