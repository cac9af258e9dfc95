"""fedkd ClientApp: decode a Flower Message, call :func:`fedkd.fl.client.handle`, encode.

Everything a client decides lives in ``fedkd.fl.client``; this adapter only translates.
Per-node state goes into ``context.state`` (Ray reuses one actor for many virtual clients, and
a deployed SuperNode starts a fresh process per message), never into module globals.
"""

from __future__ import annotations

import sys
from pathlib import Path

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp

from clients import codec
from fedkd.fl.client import BadRequest, NodeInfo, handle
from fedkd.secagg import protocol
from fedkd.transport import BAD_REQUEST, REFUSED, Envelope, Refusal

__all__ = ["BAD_REQUEST", "REFUSED", "app"]

app = ClientApp()


class ContextStore:
    """The library's per-node store over Flower's ``context.state``."""

    def __init__(self, state: RecordDict) -> None:
        self.state = state

    def get(self, key: str) -> Envelope | None:
        names = [n for n in self.state if n == key or n.startswith(f"{key}/")]
        if not names:
            return None
        return codec.decode(
            key, RecordDict({n.removeprefix(f"{key}/"): self.state[n] for n in names})
        )

    def put(self, key: str, value: Envelope) -> None:
        self.delete(key)
        for name, record in codec.encode(value).items():
            self.state[f"{key}/{name}"] = record

    def delete(self, key: str) -> None:
        for name in [n for n in self.state if n.startswith(f"{key}/")]:
            del self.state[name]


# Flower 1.42 runs a deployed ClientApp in its own process, ``flwr-clientapp``, which a
# SuperNode's SuperExec starts (``flwr.supercore.constant.TASK_TYPE_TO_COMMAND``), whatever the
# isolation mode; its simulation engine runs ClientApps in Ray workers of ``flwr-simulation``.
# Flower tells its process kinds apart the same way (``flwr.supercore.exit.exit``). The
# server controls neither: it is the node operator's process.
DEPLOYED_PROCESS = "flwr-clientapp"


def deployed() -> bool:
    """Whether this ClientApp runs under a deployed SuperNode (not Flower's simulation)."""
    return Path(sys.argv[0]).name == DEPLOYED_PROCESS


def serve(message: Message, context: Context) -> Message:
    """Every message type goes through here."""
    kind = codec.kind_of(message.metadata.message_type)
    try:
        request = codec.decode(kind, message.content)
        node = NodeInfo.from_node_config(
            context.node_id, context.run_id, context.node_config, deployed=deployed()
        )
    except (BadRequest, ValueError, KeyError) as problem:
        return Message(Error(BAD_REQUEST, f"bad {kind} request: {problem}"), reply_to=message)
    reply = handle(request, node, ContextStore(context.state), context.run_config)
    if isinstance(reply, Refusal):
        return Message(Error(reply.code, reply.reason), reply_to=message)
    return Message(codec.encode(reply), reply_to=message)


app.train()(serve)
for _stage in (protocol.SHARE_KEYS, protocol.MASKED_INPUT, protocol.CONSISTENCY, protocol.UNMASK):
    app.query(_stage)(serve)
