"""Differential privacy: client-level DP of the teacher release, DP-SGD of local training.

* :mod:`fedkd.dp.settings` -- the ``dp*`` / ``client-dp*`` run-config settings and their checks;
* :mod:`fedkd.dp.mechanisms` -- L2 clipping, Gaussian and integer (Skellam) noise;
* :mod:`fedkd.dp.plan` -- who adds how much noise in each placement, what the sum carries;
* :mod:`fedkd.dp.accounting` -- calibration and epsilon through ``dp-accounting``;
* :mod:`fedkd.dp.dpsgd` -- record-level DP-SGD of a client's local model (Opacus).

Nothing here imports Flower or :mod:`fedkd.fl`; the round glue is :mod:`fedkd.fl.privacy`.
The submodules are imported by name (``dp-accounting`` and Opacus take seconds to load, and
the run config's settings should not pay for them).
"""
