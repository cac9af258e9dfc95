"""A malicious server's attacks on fedkd's secure aggregation, as wrappers around the honest
round's transport (never a copy of it), and what they release.

* :mod:`~fedkd.attacks.secagg.base` -- :class:`Attack`: records what the server saw;
* :mod:`~fedkd.attacks.secagg.views` -- survivor-list attacks (split views, neighbourhood lies,
  reflected certificates, arbitrary lists);
* :mod:`~fedkd.attacks.secagg.key_substitution` -- the attacker's keys in place of peers';
* :mod:`~fedkd.attacks.secagg.run` -- one attacked round, the fresh-round replay;
* :mod:`~fedkd.attacks.secagg.leakage` -- which exact sums the attacker can compute;
* :mod:`~fedkd.attacks.secagg.scripted` -- the deviations honest clients must refuse;
* :mod:`~fedkd.attacks.secagg.clients` -- malicious clients (a round must survive them).

The attack study (:mod:`fedkd.attacks.secagg_isolation`) and the tests use them; the protocol
itself (:mod:`fedkd.secagg`) never does.
"""

from fedkd.attacks.secagg.base import Attack, unmask_lists, with_payload
from fedkd.attacks.secagg.key_substitution import KeySubstitution
from fedkd.attacks.secagg.leakage import Leak, Observation, assess, recover_sum
from fedkd.attacks.secagg.run import AttackRun, ReplayUnderFreshRound, run_attack
from fedkd.attacks.secagg.scripted import MaliciousServer, MaliciousTransport, scripted
from fedkd.attacks.secagg.views import (
    ArbitraryServer,
    NeighbourhoodLie,
    ReflectedCertificates,
    SplitViews,
    ViewAttack,
    sparse_isolation_plan,
    split_view_plan,
)

__all__ = [
    "ArbitraryServer",
    "Attack",
    "AttackRun",
    "KeySubstitution",
    "Leak",
    "MaliciousServer",
    "MaliciousTransport",
    "NeighbourhoodLie",
    "Observation",
    "ReflectedCertificates",
    "ReplayUnderFreshRound",
    "SplitViews",
    "ViewAttack",
    "assess",
    "recover_sum",
    "run_attack",
    "scripted",
    "sparse_isolation_plan",
    "split_view_plan",
    "unmask_lists",
    "with_payload",
]
