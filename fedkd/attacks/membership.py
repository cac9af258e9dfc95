"""Study 3, ``membership``: was this record in a client's private data?

Threat model: the server (or anyone holding the distilled student) with black-box access
to the model's outputs and the attacker's usual LiRA knowledge -- the training recipe and
data from the same distribution. Targets: (a) a client's local model of a real fedkd run
(FedMD: the client's own model, trained on its shard), (b) the run's distilled student,
which saw a client's records only through the public-set logits.

Population: records of the target client's shard (members) and as many test records with
the same labels (non-members; matching keeps the client's label prior out of the scores).
Shadow models are trained on random halves of that population with the client's recipe,
each sample IN exactly half of them. For the student, each shadow client model is put in
the target's place in the federation (the other clients' real contributions of the last
round plus the shadow's) and a shadow student is distilled from that teacher on the public
set: the attack follows the only path a record has into the student (distillation through
the public set). "Recipe, leave-one-out" rows use each shadow in turn as the target and
the others as shadows, as Carlini et al. do, so that 0.1% FPR is measured on thousands of
non-member scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fedkd.attacks.common import StudyOptions, StudyResult, markdown_table, run_config
from fedkd.attacks.federation import AttackedFederation, build_federation, observe_round
from fedkd.attacks.mia import Roc, confidences, label_matched, lira, log_likelihood_of_true, roc
from fedkd.attacks.plots import roc_plot
from fedkd.data import ArrayDataset
from fedkd.distill import client_contribution, distill, resolve_device, train_supervised
from fedkd.fl import keys
from fedkd.fl.server_work import distill_round, new_student, teacher_from_aggregate
from fedkd.models import FeatureModel, build_model

TARGET = 0  # the target client's partition id
ATTACKS = ("loss", "lira-offline", "lira-online")


@dataclass(frozen=True)
class Sizes:
    """How big one repetition is."""

    clients: int
    rounds: int
    shadows: int  # even: each sample is IN exactly half of them


def sizes(options: StudyOptions) -> Sizes:
    """Default: 4 clients, 3 rounds, 16 shadows; ``quick``: 2 clients, 1 round, 6 shadows."""
    return Sizes(2, 1, 6) if options.quick else Sizes(4, 3, 16)


def federate(options: StudyOptions, seed: int, size: Sizes) -> tuple[AttackedFederation, dict]:
    """The real run: rounds of train, (plaintext) sum, teacher and distillation."""
    config = run_config(options, seed, "membership", secagg=False)
    af = build_federation(config, size.clients)
    teacher = None
    view = None
    for r in range(1, size.rounds + 1):
        view = observe_round(af, r, list(range(size.clients)), teacher)
        if view.total is None:
            raise RuntimeError(f"round {r} failed: {view.reason}")
        teacher = teacher_from_aggregate(view.total, af.config, af.fed.split)
        distill_round(af.student, teacher, af.config, af.fed.split, server_round=r)
    assert view is not None
    others = view.total - view.contributions[TARGET]  # the rest of the federation's sum
    return af, {"others": others}


def _fresh_model(af: AttackedFederation, seed: int) -> FeatureModel:
    torch.manual_seed(seed)
    split = af.data.split
    return build_model(
        af.config.model_for_partition(TARGET),
        input_shape=split.input_shape,
        num_classes=split.num_classes,
    )


def client_model(af: AttackedFederation) -> FeatureModel:
    """The target client's own model as its node stored it after the last round."""
    saved = af.stores[TARGET].get(keys.STATE_MODEL)
    if saved is None:
        raise RuntimeError("the target client kept no model (is the run in FedMD mode?)")
    model = _fresh_model(af, 0)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in saved.arrays.items()})
    return model


def population(af: AttackedFederation, seed: int) -> tuple[ArrayDataset, np.ndarray]:
    """Records of the target's shard (members) and label-matched unseen test records."""
    shard, test = af.data.client_train(TARGET), af.data.split.test
    m, o = label_matched(shard.y, test.y, np.random.default_rng([seed, 3]), len(shard))
    data = ArrayDataset(
        np.concatenate([shard.x[m], test.x[o]]), np.concatenate([shard.y[m], test.y[o]])
    )
    return data, np.r_[np.ones(len(m), bool), np.zeros(len(o), bool)]


def in_masks(count: int, shadows: int, seed: int) -> np.ndarray:
    """``(shadows, count)`` IN masks: every sample IN exactly half of the shadows."""
    rng = np.random.default_rng([seed, 5])
    order = np.argsort(rng.random((shadows, count)), axis=0)
    return order < shadows // 2


def train_like_client(
    af: AttackedFederation, data: ArrayDataset, seed: int, device: str, rounds: int
) -> FeatureModel:
    """A model trained with the target client's recipe (warm-up + local epochs per round)."""
    local = af.config.local
    model = _fresh_model(af, seed)
    train_supervised(
        model,
        data,
        epochs=local.warmup_epochs + rounds * local.epochs,
        batch_size=local.batch_size,
        lr=local.lr,
        optimizer=local.optimizer,
        device=device,
        seed=seed,
    )
    return model.to("cpu")


def student_from(
    af: AttackedFederation,
    model: FeatureModel,
    train: ArrayDataset,
    others: np.ndarray,
    seed: int,
    device: str,
) -> FeatureModel:
    """A shadow student: ``model`` in the target's place in the federation's teacher."""
    config, split = af.config, af.data.split
    logits = _logits(model, split.public.x, device)
    bound = config.secagg.clip * config.teacher.temperature
    counts = np.bincount(train.y, minlength=split.num_classes)
    mine = client_contribution(
        np.clip(logits, -bound, bound),
        config=config.teacher,
        label_counts=counts,
        num_samples=len(train),
    ).to_vector() / float(len(split.private))
    teacher = teacher_from_aggregate(others + mine, config, split)
    student = new_student(config, split)
    torch.manual_seed(seed)
    distill(
        student,
        split.public.x,
        teacher_logits=teacher,
        temperature=config.distill.temperature,
        epochs=config.distill.epochs,
        batch_size=config.distill.batch_size,
        lr=config.distill.lr,
        device=device,
        seed=seed,
    )
    return student.to("cpu")


def _logits(model: FeatureModel, x: np.ndarray, device: str) -> np.ndarray:
    from fedkd.distill import predict_logits

    return predict_logits(model, x, device=device).astype(np.float64)


@dataclass
class ShadowSet:
    """Shadow confidences and losses ``(S, N)`` of client models and of students."""

    masks: np.ndarray
    client_phi: np.ndarray
    client_loss: np.ndarray
    student_phi: np.ndarray
    student_loss: np.ndarray


def shadows(
    af: AttackedFederation,
    data: ArrayDataset,
    others: np.ndarray,
    size: Sizes,
    seed: int,
    device: str,
) -> ShadowSet:
    """Train every shadow client (and its shadow student) and score the population."""
    masks = in_masks(len(data), size.shadows, seed)
    rows: dict[str, list[np.ndarray]] = {k: [] for k in ("cp", "cl", "sp", "sl")}
    for s in range(size.shadows):
        train = data.subset(np.flatnonzero(masks[s]))
        model = train_like_client(af, train, seed * 1_000 + s, device, size.rounds)
        student = student_from(af, model, train, others, seed * 1_000 + s, device)
        rows["cp"].append(confidences(model, data, device))
        rows["cl"].append(log_likelihood_of_true(model, data, device))
        rows["sp"].append(confidences(student, data, device))
        rows["sl"].append(log_likelihood_of_true(student, data, device))
    return ShadowSet(masks, *(np.stack(rows[k]) for k in ("cp", "cl", "sp", "sl")))


def attack(
    target_phi: np.ndarray,
    target_loss: np.ndarray,
    phi: np.ndarray,
    masks: np.ndarray,
    members: np.ndarray,
) -> dict[str, Roc]:
    """The three attacks on one target model."""
    return {
        "loss": roc(target_loss, members),
        "lira-offline": roc(lira(target_phi, phi, masks, online=False), members),
        "lira-online": roc(lira(target_phi, phi, masks, online=True), members),
    }


def leave_one_out(phi: np.ndarray, loss: np.ndarray, masks: np.ndarray) -> dict[str, Roc]:
    """Each shadow as the target, the others as its shadows; scores pooled over targets."""
    scores: dict[str, list[np.ndarray]] = {a: [] for a in ATTACKS}
    truth = []
    for i in range(len(phi)):
        rest = np.arange(len(phi)) != i
        scores["loss"].append(loss[i])
        scores["lira-offline"].append(lira(phi[i], phi[rest], masks[rest], online=False))
        scores["lira-online"].append(lira(phi[i], phi[rest], masks[rest], online=True))
        truth.append(masks[i])
    members = np.concatenate(truth)
    return {a: roc(np.concatenate(s), members) for a, s in scores.items()}


def one_seed(options: StudyOptions, seed: int, size: Sizes) -> dict[str, dict[str, Roc]]:
    """All four targets (fedkd run and recipe, client and student) for one seed."""
    device = str(resolve_device(None))
    af, extra = federate(options, seed, size)
    data, members = population(af, seed)
    target = client_model(af)
    shadow = shadows(af, data, extra["others"], size, seed, device)
    student = af.student
    return {
        "client model (fedkd run)": attack(
            confidences(target, data, device),
            log_likelihood_of_true(target, data, device),
            shadow.client_phi,
            shadow.masks,
            members,
        ),
        "client recipe (leave-one-out)": leave_one_out(
            shadow.client_phi, shadow.client_loss, shadow.masks
        ),
        "student (fedkd run)": attack(
            confidences(student, data, device),
            log_likelihood_of_true(student, data, device),
            shadow.student_phi,
            shadow.masks,
            members,
        ),
        "student recipe (leave-one-out)": leave_one_out(
            shadow.student_phi, shadow.student_loss, shadow.masks
        ),
    }


def run(options: StudyOptions) -> StudyResult:
    """Every seed; the table averages over seeds, the ROC plot shows the first seed."""
    size = sizes(options)
    per_seed = [one_seed(options, seed, size) for seed in options.seeds]
    headers = ["target", "attack", "AUC", "TPR@1%FPR", "TPR@0.1%FPR", "bal. acc.", "non-members"]
    rows, summary = [], {}
    for target, attacks in per_seed[0].items():
        for name in attacks:
            figures = {
                k: float(np.mean([s[target][name].summary()[k] for s in per_seed]))
                for k in attacks[name].summary()
            }
            summary[f"{target} / {name}"] = figures
            rows.append([target, name, *figures.values()])
            rows[-1][-1] = int(figures["non_members"])
    curves = {
        f"{t} {a}": (r.fpr, r.tpr)
        for t, attacks in per_seed[0].items()
        if "leave-one-out" in t
        for a, r in attacks.items()
    }
    plot = roc_plot(options.out / "roc.png", curves, "membership inference (log-log ROC)")
    return StudyResult(
        name="membership",
        question="Can an attacker tell whether a record was in a client's private data?",
        threat_model="black-box access to a client model or the distilled student; LiRA "
        "knowledge: the training recipe and same-distribution data for shadow models",
        results={"sizes": size.__dict__, "summary": summary},
        table=markdown_table(headers, rows),
        answer=_answer(summary),
        plots=[plot.name],
    )


def _answer(summary: dict[str, dict[str, float]]) -> str:
    def get(target: str, attack_name: str, figure: str) -> float:
        return summary[f"{target} / {attack_name}"][figure]

    client, student = "client recipe (leave-one-out)", "student recipe (leave-one-out)"
    key = "tpr_at_0.1pct_fpr"
    online, loss = get(client, "lira-online", key), get(client, "loss", key)
    verdict = "beats" if online > loss else "does NOT beat (unlike Carlini et al.)"
    student_auc = get(student, "lira-online", "auc")
    return (
        f"On the client recipe LiRA (online) {verdict} the loss threshold at 0.1% FPR: TPR "
        f"{online:.3f} vs {loss:.3f} (AUC {get(client, 'lira-online', 'auc'):.3f} vs "
        f"{get(client, 'loss', 'auc'):.3f}). Through the public set the student shows LiRA AUC "
        f"{student_auc:.3f} and TPR {get(student, 'lira-online', key):.3f} at 0.1% FPR"
        f"{' (chance level)' if abs(student_auc - 0.5) < 0.05 else ''}. Differential privacy is "
        f"not in this run (fedkd has no DP mechanism yet): the 'student with DP' row is missing."
    )
