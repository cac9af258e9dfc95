"""A small SHA-256 Merkle tree: one signature or one signed root over many per-peer values.

A client publishes one value per neighbour (a receive key in stage 1, a ciphertext in stage 2)
but every neighbour needs only its own: the client signs the root of a tree over all of them,
and the server hands each neighbour its value with the path to the root (``log2(k)`` hashes)
instead of the whole list. Leaves and inner nodes are hashed under different prefixes and the
root binds the leaf count, so a path can neither pass an inner node off as a leaf nor move a
leaf to another index.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

HASH_BYTES = 32
_LEAF, _NODE, _ROOT = b"\x00", b"\x01", b"\x02"


def leaf_hash(data: bytes) -> bytes:
    """Hash of one leaf's data."""
    return hashlib.sha256(_LEAF + data).digest()


def _parent(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(_NODE + left + right).digest()


def _levels(leaves: Sequence[bytes]) -> list[list[bytes]]:
    """Every level of the tree, leaf hashes first; an odd last node moves up unchanged."""
    level = [leaf_hash(data) for data in leaves]
    levels = [level]
    while len(level) > 1:
        pairs = [_parent(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        level = pairs + ([level[-1]] if len(level) % 2 else [])
        levels.append(level)
    return levels


def _seal(count: int, top: bytes) -> bytes:
    return hashlib.sha256(_ROOT + count.to_bytes(8, "big") + top).digest()


class Tree:
    """A tree built once, for its root and every leaf's path."""

    def __init__(self, leaves: Sequence[bytes]) -> None:
        self.count = len(leaves)
        self.levels = _levels(leaves) if leaves else [[bytes(HASH_BYTES)]]
        self.root = _seal(self.count, self.levels[-1][0])

    def path(self, index: int) -> bytes:
        """The sibling hashes from leaf ``index`` up (concatenated, ``HASH_BYTES`` each)."""
        if not 0 <= index < self.count:
            raise IndexError(f"leaf {index} of a tree of {self.count}")
        siblings = []
        for level in self.levels[:-1]:
            sibling = index ^ 1
            if sibling < len(level):
                siblings.append(level[sibling])
            index //= 2
        return b"".join(siblings)


def climb(count: int, index: int, data: bytes, path: bytes) -> bytes | None:
    """The root that ``data`` at leaf ``index`` of ``count`` and its ``path`` lead to."""
    if not 0 <= index < count or len(path) % HASH_BYTES:
        return None
    node, width, offset = leaf_hash(data), count, 0
    while width > 1:
        sibling = index ^ 1
        if sibling < width:
            if offset + HASH_BYTES > len(path):
                return None
            other = path[offset : offset + HASH_BYTES]
            offset += HASH_BYTES
            node = _parent(node, other) if index % 2 == 0 else _parent(other, node)
        index //= 2
        width = (width + 1) // 2
    return _seal(count, node) if offset == len(path) else None


def verify(top: bytes, count: int, index: int, data: bytes, path: bytes) -> bool:
    """Whether ``data`` is leaf ``index`` of the ``count``-leaf tree with root ``top``."""
    return climb(count, index, data, path) == top
