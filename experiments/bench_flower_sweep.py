"""What one message exchange costs Flower's simulation engine, by federation size.

    python -m experiments.bench_flower_sweep                 # N = 100, 1,000, 10,000
    python -m experiments.bench_flower_sweep --nodes 10000 --messages 0 100

Flower 1.42's simulation engine (``flwr.server.superlink.fleet.vce.vce_api``) hands messages
to its workers from a thread that sweeps every registered node, asking the in-memory LinkState
for that node's next message; the LinkState answers by scanning every stored message (and
re-checking each one's expiry and federation). A sweep therefore costs
``nodes x stored messages``, and every exchange of a round waits for the sweep that reaches
its last destination. A FedAvg round is one exchange; a secure FedKD round is five (train with
key advertisement, key shares, masked input, consistency, unmasking), so at 10,000 nodes the
round is bounded below by five sweeps whatever the clients do.

This times that sweep on Flower's own classes (the same ``InMemoryLinkState`` and node
registration the simulation uses), with ``--messages`` instructions stored for distinct random
nodes as a round's push leaves them, and prints each size's sweep against the same size's
sweep with nothing stored (the baseline, measured in the same run).
"""

from __future__ import annotations

import argparse
import random
import time
from types import SimpleNamespace


def sweep_seconds(nodes: int, messages: int, seed: int = 0) -> tuple[float, int]:
    """Seconds of one engine sweep over ``nodes`` with ``messages`` undelivered instructions
    stored, and how many it delivered."""
    from flwr.common import now
    from flwr.server.superlink.fleet.vce.vce_api import _register_nodes
    from flwr.server.superlink.linkstate import LinkStateFactory
    from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME, NOOP_FEDERATION_ID
    from flwr.supercore.object_store import ObjectStoreFactory
    from flwr.superlink.federation import NoOpFederationManager

    factory = LinkStateFactory(
        FLWR_IN_MEMORY_DB_NAME, NoOpFederationManager(), ObjectStoreFactory()
    )
    mapping = _register_nodes(nodes, factory)  # what run_simulation does for its SuperNodes
    state = factory.state()
    run_id = state.create_run(None, None, None, {}, NOOP_FEDERATION_ID, None, None, "serverapp")
    created = now().timestamp()
    for i, node in enumerate(random.Random(seed).sample(list(mapping), messages)):
        # The fields the engine's lookup reads, as a stored instruction carries them.
        metadata = SimpleNamespace(
            dst_node_id=node, src_node_id=0, run_id=run_id, delivered_at="",
            created_at=created, ttl=3600.0,
        )  # fmt: skip
        state.message_ins_store[f"m{i}"] = SimpleNamespace(metadata=metadata)  # type: ignore[attr-defined]
    start, delivered = time.perf_counter(), 0
    for node in mapping:  # add_messages_to_queue's loop
        delivered += len(state.get_message_ins(node_id=node, limit=1))
    return time.perf_counter() - start, delivered


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--messages", type=int, nargs="+", default=[0, 20, 100])
    args = parser.parse_args(argv)
    if min(args.nodes) < 1 or min(args.messages) < 0:
        parser.error("--nodes must be >= 1 and --messages >= 0")
    print("nodes  messages  sweep s   vs nothing stored")
    for nodes in args.nodes:
        empty, _ = sweep_seconds(nodes, 0)
        for messages in args.messages:
            if messages > nodes:
                continue
            # The baseline is the 0-message row itself: sweep it once.
            seconds, delivered = (empty, 0) if messages == 0 else sweep_seconds(nodes, messages)
            if delivered != messages:
                raise RuntimeError(f"a sweep delivered {delivered} of {messages} messages")
            print(f"{nodes:5d}  {messages:8d}  {seconds:7.3f}   {seconds / empty:8.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
