"""Study 5, ``crafted-queries``: a malicious server that picks the public set.

Threat model: the server chooses the run config, hence which public set the clients load
and answer on, and sees plaintext contributions (``secagg=false``) or their secure sum. Node
operators may pin the public set they accept (node config ``public-set-digest``,
:func:`fedkd.fl.client._check_secagg_request`).

Part 1, the pin, through the real client code: the server switches to another public set
(another split seed) and we record which nodes answer, pinned or not, secure or plaintext.

Part 2, what a server allowed to choose the public set learns, with the clients' real models
of an honest fedkd run answering crafted sets through the client's own contribution steps:

* ``single repeated input`` -- the public set is one guessed record ``x*`` (repeated);
* ``near-copies`` -- ``x*`` plus small noise, ``copies`` times (averages the model's noise);
* ``out-of-distribution probes`` -- uniform-noise images: the answers show a client's label
  prior (label inference without any real public data).

The membership score of ``x*`` (label ``y*``) is the logit of the answer's mean probability
of ``y*``;
members are records of the target client's shard, non-members test records. Plaintext
shows the target's own answer; a secure sum shows the mean over the n clients.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedkd.attacks.common import StudyOptions, StudyResult, markdown_table, run_config, tv_distance
from fedkd.attacks.federation import (
    AttackedFederation,
    build_federation,
    client_model,
    contribution_on,
    observe_round,
)
from fedkd.attacks.mia import label_matched, roc
from fedkd.attacks.plots import line_plot

TARGET = 0
# Uniform weights: the answers carry only what the logits say (class weights would reveal
# a client's histogram outright, see the label-inference study).
UNIFORM = {"teacher-rule": "probs", "class-weighting": False, "entropy-weighting": False}
QUERIES = ("honest public set (nearest sample)", "single repeated input", "near-copies")
NOISE = 0.05  # std of the near-copies' noise (inputs are in [0, 1])


@dataclass(frozen=True)
class Sizes:
    """How big one repetition is."""

    clients: int
    records: int  # members and as many non-members
    copies: int
    probes: int
    group_sizes: tuple[int, ...]


def sizes(options: StudyOptions) -> Sizes:
    """Default: 10 clients, 100 + 100 records, 16 copies; ``quick``: 4 clients, 40 + 40."""
    if options.quick:
        return Sizes(4, 40, 8, 32, (1, 2, 4))
    return Sizes(10, 100, 16, 64, (1, 2, 5, 10))


def pin_table(options: StudyOptions, seed: int) -> list[dict[str, object]]:
    """Which nodes answer when the server swaps the public set, pinned or not."""
    honest = run_config(options, seed, "pin-honest", secagg=True)
    pinned = build_federation(honest, 2).data.public_digest.hex()
    rows = []
    for public, secure, pin in (
        ("the run's own", True, True),
        ("another split", True, True),
        ("another split", True, False),
        ("another split", False, True),
    ):
        config = run_config(
            options,
            seed if public == "the run's own" else seed + 1,
            "pin",
            secagg=secure,
            **{"local-epochs": 1, "warmup-epochs": 0},
        )
        af = build_federation(config, 2, pinned_digest=pinned if pin else "")
        view = observe_round(af, 1, [0, 1])
        why = sorted(set(view.failed.values()))
        rows.append(
            {
                "public set": public,
                "secagg": secure,
                "pinned": pin,
                "answered": len(view.failed) == 0,
                "why": why[0][:140] if why else "",
            }
        )
    return rows


@dataclass
class QueriedFederation:
    """An honest run's clients, their models and training labels."""

    af: AttackedFederation
    models: list[object]
    labels: list[np.ndarray]


def honest_run(options: StudyOptions, seed: int, size: Sizes) -> QueriedFederation:
    """One real round (the clients' warm-up and local training) in plaintext."""
    config = run_config(options, seed, "crafted", secagg=False, **UNIFORM)
    af = build_federation(config, size.clients)
    observe_round(af, 1, list(range(size.clients)))
    models = [client_model(af, k) for k in range(size.clients)]
    labels = [af.data.client_train(k).y for k in range(size.clients)]
    return QueriedFederation(af, models, labels)


def answers(fed: QueriedFederation, inputs: np.ndarray, clients: list[int]) -> np.ndarray:
    """The server's view of ``clients``' answers on a public set: mean probabilities (P, C).

    The sum of their teacher parts, divided per class by the summed weights (a class no
    client saw reads 0): one client's answer in plaintext, the group's in a secure sum.
    """
    c = fed.af.data.split.num_classes
    total = np.sum(
        [contribution_on(fed.af, fed.models[k], inputs, fed.labels[k]) for k in clients], axis=0
    )
    values, weights = total[: len(inputs) * c].reshape(len(inputs), c), total[len(inputs) * c :]
    return np.where(weights > 0, values / np.where(weights > 0, weights, 1.0), 0.0)


def records(
    fed: QueriedFederation, size: Sizes, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Guessed records: members of the target's shard and label-matched test non-members.

    Matching the labels keeps the client's label prior out of the score: what is left is
    whether the model saw this very record.
    """
    rng = np.random.default_rng([seed, 11])
    shard, test = fed.af.data.client_train(TARGET), fed.af.data.split.test
    m, o = label_matched(shard.y, test.y, rng, size.records)
    x = np.concatenate([shard.x[m], test.x[o]])
    y = np.concatenate([shard.y[m], test.y[o]])
    return x, y, np.r_[np.ones(len(m), bool), np.zeros(len(o), bool)]


def queries(fed: QueriedFederation, x: np.ndarray, how: str, copies: int, seed: int) -> np.ndarray:
    """The public set the server sends for each record: ``(records, copies, ...)``."""
    if how == QUERIES[0]:  # the best an honest public set offers: the nearest public sample
        public = fed.af.data.split.public.x
        flat = public.reshape(len(public), -1).astype(np.float64)
        rows = x.reshape(len(x), -1).astype(np.float64)
        d = (rows**2).sum(1)[:, None] - 2 * rows @ flat.T + (flat**2).sum(1)[None, :]
        return np.repeat(public[d.argmin(axis=1)][:, None], copies, axis=1)
    repeated = np.repeat(x[:, None], copies, axis=1)
    if how == QUERIES[1]:
        return repeated
    rng = np.random.default_rng([seed, 13])
    return np.clip(repeated + rng.normal(0, NOISE, repeated.shape), 0.0, 1.0).astype(x.dtype)


def _logit_of_label(probs: np.ndarray, y: np.ndarray) -> np.ndarray:
    mean = np.clip(probs[np.arange(len(y)), :, y].mean(axis=1), 1e-15, 1 - 1e-15)
    return np.asarray(np.log(mean) - np.log1p(-mean))


def membership_auc(fed: QueriedFederation, size: Sizes, seed: int) -> dict[str, dict[int, float]]:
    """AUC of the crafted-query membership score, per query kind and clients in the sum.

    ``raw``: the logit of the answer's mean probability of ``y*``. ``calibrated``: minus the
    same for every client but the target (a round without the target shows the server that
    sum): they never saw ``x*``, so they measure how hard ``x*`` is, as LiRA's OUT models do.
    When the group is the whole federation this is differencing two rounds' sums.
    """
    x, y, members = records(fed, size, seed)
    rng = np.random.default_rng([seed, 7])
    others = [k for k in range(size.clients) if k != TARGET]
    out: dict[str, dict[int, float]] = {}
    for how in QUERIES:
        asked = queries(fed, x, how, size.copies, seed)
        flat = asked.reshape(-1, *asked.shape[2:])
        raw, calibrated = (
            out.setdefault(f"{how}, raw", {}),
            out.setdefault(f"{how}, calibrated", {}),
        )
        for n in size.group_sizes:
            group = [TARGET, *rng.choice(others, size=n - 1, replace=False).tolist()]
            score = _logit_of_label(answers(fed, flat, group).reshape(len(x), size.copies, -1), y)
            ref = _logit_of_label(answers(fed, flat, others).reshape(len(x), size.copies, -1), y)
            raw[n] = roc(score, members).auc
            calibrated[n] = roc(score - ref, members).auc
    return out


def probe_label_inference(fed: QueriedFederation, size: Sizes, seed: int) -> dict[str, float]:
    """Mean TV to each client's histogram: OOD probes, the honest public set, a uniform guess."""
    rng = np.random.default_rng([seed, 23])
    split = fed.af.data.split
    probes = rng.uniform(0, 1, (size.probes, *split.input_shape)).astype(split.public.x.dtype)
    out: dict[str, list[float]] = {"ood probes": [], "honest public set": [], "uniform": []}
    for k in range(size.clients):
        truth = np.bincount(fed.labels[k], minlength=split.num_classes)
        out["ood probes"].append(float(tv_distance(answers(fed, probes, [k]).mean(0), truth)))
        public = answers(fed, split.public.x, [k]).mean(0)
        out["honest public set"].append(float(tv_distance(public, truth)))
        out["uniform"].append(float(tv_distance(np.ones(split.num_classes), truth)))
    return {name: float(np.mean(v)) for name, v in out.items()}


def run(options: StudyOptions) -> StudyResult:
    """The pin table (first seed) and the crafted-query attacks (every seed)."""
    size = sizes(options)
    pins = pin_table(options, options.seeds[0])
    per_seed = []
    for seed in options.seeds:
        fed = honest_run(options, seed, size)
        per_seed.append(
            {
                "membership": membership_auc(fed, size, seed),
                "probes": probe_label_inference(fed, size, seed),
            }
        )
    return _report(options, size, pins, per_seed)


def _report(
    options: StudyOptions, size: Sizes, pins: list[dict], per_seed: list[dict]
) -> StudyResult:
    pin_rows = [[r["public set"], r["secagg"], r["pinned"], r["answered"], r["why"]] for r in pins]
    table = markdown_table(
        ["server's public set", "secagg", "node pin", "nodes answer", "why"], pin_rows
    )
    auc = {
        how: [float(np.mean([s["membership"][how][n] for s in per_seed])) for n in size.group_sizes]
        for how in per_seed[0]["membership"]
    }
    table += "\n" + markdown_table(
        ["query (membership of a guessed record)", *[f"AUC n={n}" for n in size.group_sizes]],
        [[how, *values] for how, values in auc.items()],
    )
    probes = {k: float(np.mean([s["probes"][k] for s in per_seed])) for k in per_seed[0]["probes"]}
    table += "\n" + markdown_table(
        ["label inference of one client from", "mean TV"], [[k, v] for k, v in probes.items()]
    )
    plot = line_plot(
        options.out / "crafted_membership_auc.png",
        list(size.group_sizes),
        auc,
        hlines={"chance": 0.5},
        title="membership of a guessed record",
        xlabel="clients in the sum (n)",
        ylabel="AUC",
    )
    refused = [r for r in pins if not r["answered"]]
    plain_pin = next(r for r in pins if not r["secagg"])
    loophole = (
        ", and a pinned node still answers a plaintext round on it (the pin is checked only "
        "with the secure-aggregation config)"
        if plain_pin["answered"]
        else ""
    )
    single, near, nearest = (auc[f"{q}, calibrated"] for q in (QUERIES[1], QUERIES[2], QUERIES[0]))
    raw_sum = auc[f"{QUERIES[1]}, raw"][-1]
    n = size.group_sizes[-1]
    answer = (
        f"The pin stopped {len(refused)} of 3 public-set swaps: pinned nodes refuse a secure "
        f"round on another public set, unpinned nodes answer it{loophole}. Once the server may "
        f"choose the public set, a single repeated guessed record gives (calibrated) membership "
        f"AUC {single[0]:.3f} against one client in plaintext (near-copies {near[0]:.3f}, the "
        f"honest public set's nearest sample {nearest[0]:.3f}; non-members label-matched). A "
        f"secure sum of {n} alone gives AUC {raw_sum:.3f}; with a second round without the "
        f"target (differencing) {single[-1]:.3f} again. Out-of-distribution (uniform-noise) "
        f"probes give a client's label histogram at TV {probes['ood probes']:.3f} (honest "
        f"public set {probes['honest public set']:.3f}, uniform guess {probes['uniform']:.3f})."
    )
    return StudyResult(
        name="crafted-queries",
        question="What does a server that picks the public set learn, and what does the pin stop?",
        threat_model="malicious server choosing the run config (public set); clients honest, "
        "optionally pinning the public-set digest",
        results={"sizes": size.__dict__, "pins": pins, "auc": auc, "probes": probes},
        table=table,
        answer=answer,
        plots=[plot.name],
    )
