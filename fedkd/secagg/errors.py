"""Exceptions of the secure-aggregation layer.

Two families matter to callers:

* :class:`ProtocolAbort` -- the *server* cannot complete the round (too few clients left, a secret
  that cannot be reconstructed). The round fails cleanly; nothing secret was revealed.
* :class:`RefusedRequest` -- an honest *client* refuses a request because answering it could reveal
  its input (overlapping survivor/dropped lists, too few survivors, mismatched configuration,
  replayed round, failed authentication). A refusing client sends nothing and aborts its round.
"""

from __future__ import annotations


class SecAggError(Exception):
    """Base class of every error raised by :mod:`fedkd.secagg`."""


class ConfigError(SecAggError, ValueError):
    """An aggregation configuration is invalid or unsafe (raised before any client work)."""


class WireFormatError(SecAggError, ValueError):
    """A message cannot be decoded or has the wrong shape."""


class ProtocolAbort(SecAggError):
    """The server cannot finish the round; the caller should skip or retry it."""


class RefusedRequest(SecAggError):
    """An honest client refuses a server request; it reveals nothing and aborts the round."""


class InconsistentLists(RefusedRequest):
    """The survivor and dropped lists overlap, or omit a peer whose shares this client holds."""


class TooFewSurvivors(RefusedRequest):
    """Fewer clients than the threshold would remain in the aggregate."""


class UnknownPeer(RefusedRequest):
    """A request names a client outside the round's participants or outside this client's view."""


class ConfigMismatch(RefusedRequest):
    """Another client advertised a different configuration digest than this client's."""


class ReplayedRequest(RefusedRequest):
    """A second masked-input or unmask request, or a restart, for an already spent (run, round)."""


class AuthenticationFailure(RefusedRequest):
    """An encrypted share or a public key failed authentication or validation."""


class StageOrderError(RefusedRequest):
    """A request arrived for a stage this client is not in (out of order or for another round)."""


class RoundAborted(RefusedRequest):
    """This client already refused a request of the round and answers nothing more in it."""
