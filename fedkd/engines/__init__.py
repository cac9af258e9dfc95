"""Engines: what carries a round's messages to a federation's clients.

Every engine runs the same round (:mod:`fedkd.fl.rounds`) over a
:class:`~fedkd.transport.Transport`, and every client is the library's
:func:`fedkd.fl.client.handle`:

- ``inprocess``: every client called in this process, one after another (the reference:
  tests, attack studies, bit-equality);
- ``ray``: :class:`~fedkd.engines.ray_transport.RayTransport`, a pool of Ray actors that each
  serve a fixed share of the population in a loop (populations of 10^4-10^6, a Ray cluster);
- ``flower``: Flower's simulation or deployment, through ``flwr run`` (``server/``,
  ``clients/``; ``fedkd run --engine flower``).

:func:`~fedkd.engines.run.run_federation` is the Python entry point of the first two.
"""

from fedkd.engines.ray_transport import RayResources, RayTransport
from fedkd.engines.run import ENGINES, run_federation

__all__ = ["ENGINES", "RayResources", "RayTransport", "run_federation"]
