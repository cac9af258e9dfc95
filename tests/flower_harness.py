"""A Flower ``Grid`` that delivers messages to our real ClientApp inside the test process.

It replaces only the transport (SuperLink + Ray) so server and client handlers run together
in seconds; each node keeps its own ``Context`` across messages exactly as a SuperNode does.
The full transport is exercised by the ``flwr run`` end-to-end test.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

RUN_ID = 7
SERVER_NODE = 0
CLIENT_APP_RAISED = 101  # flwr.common.constant.ErrorCode.CLIENT_APP_RAISED_EXCEPTION


def install_identity() -> None:
    """Flower builds message metadata from the task identity a SuperLink would set."""
    TaskIdentity.run_id = RUN_ID
    TaskIdentity.node_id = SERVER_NODE
    TaskIdentity.task_id = 1


class InProcessGrid(Grid):
    """Routes each message to ``client_app`` with that node's persistent ``Context``.

    ``intercept(message) -> bool`` may swallow a message (the node then never answers, as on a
    time-out); ``tamper(reply) -> Message`` may rewrite a reply in flight.
    """

    def __init__(
        self,
        client_app: ClientApp,
        run_config: dict[str, Any],
        num_nodes: int,
        *,
        intercept: Callable[[Message], bool] | None = None,
        tamper: Callable[[Message], Message] | None = None,
    ) -> None:
        install_identity()
        self.client_app = client_app
        self.node_ids = [1000 + 17 * i for i in range(num_nodes)]
        self.contexts = {
            node: Context(
                run_id=RUN_ID,
                node_id=node,
                node_config={"partition-id": i, "num-partitions": num_nodes},
                state=RecordDict(),
                run_config=dict(run_config),
            )
            for i, node in enumerate(self.node_ids)
        }
        self.intercept = intercept
        self.tamper = tamper
        self.sent: list[Message] = []
        self.replies: list[Message] = []
        self.waiting: dict[str, Message] = {}  # request id -> its reply, not yet pulled

    # The Grid interface ---------------------------------------------------------------
    def set_run(self, run_id: int) -> None:  # pragma: no cover - not used in-process
        del run_id

    @property
    def run(self) -> Any:  # pragma: no cover - not used in-process
        return None

    def create_message(self, *args: Any, **kwargs: Any) -> Message:  # pragma: no cover
        raise TypeError("create Message objects directly")

    def get_node_ids(self) -> Iterable[int]:
        return list(self.node_ids)

    def get_nodes(self) -> Iterable[Any]:  # pragma: no cover
        return []

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Deliver each message now; its reply waits for :meth:`pull_messages`."""
        ids = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = uuid.uuid4().hex
            message.metadata.__dict__["_created_at"] = time.time()
            ids.append(message.metadata.message_id)
            self.sent.append(message)
            if self.intercept is not None and self.intercept(message):
                continue
            node = message.metadata.dst_node_id
            try:
                reply = self.client_app(message, self.contexts[node])
            except Exception as crash:  # what a SuperNode does when its ClientApp raises
                reply = Message(
                    Error(CLIENT_APP_RAISED, f"{type(crash).__name__}: {crash}"), reply_to=message
                )
            reply = reply if self.tamper is None else self.tamper(reply)
            self.replies.append(reply)
            self.waiting[message.metadata.message_id] = reply
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """The replies to ``message_ids`` that are in, each handed out once (as a SuperLink)."""
        return [self.waiting.pop(i) for i in list(message_ids) if i in self.waiting]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(list(messages)))


def server_context(run_config: dict[str, Any]) -> Context:
    """The Context a ServerApp receives."""
    return Context(
        run_id=RUN_ID,
        node_id=SERVER_NODE,
        node_config={},
        state=RecordDict(),
        run_config=dict(run_config),
    )
