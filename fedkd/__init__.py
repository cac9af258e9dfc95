"""fedkd: federated knowledge distillation with secure aggregation.

The Python entry point is :func:`fedkd.run_federation` (every method, in process or on the
Ray engine; it returns the run's recorder, whose ``rows`` are the per-round history, and whose
``path`` is the run's folder under ``out-dir``):

>>> import fedkd
>>> tiny = {"num-rounds": 2, "local-epochs": 1, "warmup-epochs": 1, "distill-epochs": 1}
>>> history = fedkd.run_federation({**tiny, "method": "fedavg"}, 4, engine="inprocess")
>>> [row.round for row in history.rows], history.rows[-1].survivors
([1, 2], 4)
>>> 0.0 <= history.rows[-1].student_accuracy <= 1.0
True

``import fedkd`` itself stays light (no PyTorch or Ray): the names below load on first use.
"""

from typing import Any

__all__ = ["RayResources", "run_federation"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from fedkd import engines

        return getattr(engines, name)
    raise AttributeError(f"module 'fedkd' has no attribute {name!r}")
