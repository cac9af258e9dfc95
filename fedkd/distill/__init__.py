"""Knowledge distillation: losses, ensemble-teacher rules and the training recipe.

:func:`fit` (:mod:`fedkd.distill.recipe`) is the one training loop: a sum of loss terms
(:mod:`fedkd.distill.terms`) with validation-based early stopping; :func:`train_supervised` and
:func:`distill` are two recipes over it.

The names load on first use (:mod:`fedkd._lazy`), so that the run config's check of a
teacher rule (:mod:`fedkd.distill.teacher`, numpy only) does not import PyTorch.
"""

from typing import TYPE_CHECKING

from fedkd._lazy import lazy_exports

if TYPE_CHECKING:
    from fedkd.distill.losses import (
        HintProjection,
        attention_transfer_loss,
        check_temperature,
        hint_loss,
        kd_loss,
        rkd_angle_loss,
        rkd_distance_loss,
        soft_target_ce,
    )
    from fedkd.distill.recipe import (
        FitConfig,
        Validation,
        fit,
        predict_outputs,
        teacher_outputs,
    )
    from fedkd.distill.teacher import (
        TEACHER_RULES,
        Contribution,
        TeacherConfig,
        TeacherRule,
        available_teacher_rules,
        client_contribution,
        ensemble_teacher,
        get_teacher_rule,
        register_teacher_rule,
        teacher_from_sum,
    )
    from fedkd.distill.terms import (
        AttentionTransfer,
        CrossEntropy,
        DistributionMatch,
        Hint,
        LossTerm,
        Relational,
        SoftTargets,
        hint_term,
        kd_mix,
    )
    from fedkd.distill.train import (
        EvalReport,
        TrainReport,
        distill,
        evaluate,
        predict_logits,
        resolve_device,
        train_supervised,
    )

__all__ = [
    "AttentionTransfer",
    "Contribution",
    "CrossEntropy",
    "DistributionMatch",
    "EvalReport",
    "FitConfig",
    "Hint",
    "HintProjection",
    "LossTerm",
    "Relational",
    "SoftTargets",
    "TEACHER_RULES",
    "TeacherConfig",
    "TeacherRule",
    "TrainReport",
    "Validation",
    "attention_transfer_loss",
    "available_teacher_rules",
    "check_temperature",
    "client_contribution",
    "distill",
    "ensemble_teacher",
    "evaluate",
    "fit",
    "get_teacher_rule",
    "hint_loss",
    "hint_term",
    "kd_loss",
    "kd_mix",
    "predict_logits",
    "predict_outputs",
    "register_teacher_rule",
    "resolve_device",
    "rkd_angle_loss",
    "rkd_distance_loss",
    "soft_target_ce",
    "teacher_from_sum",
    "teacher_outputs",
    "train_supervised",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    __all__,
    (  # searched in this order: the teacher rules, which need no PyTorch, first
        "fedkd.distill.teacher",
        "fedkd.distill.losses",
        "fedkd.distill.recipe",
        "fedkd.distill.terms",
        "fedkd.distill.train",
    ),
)
