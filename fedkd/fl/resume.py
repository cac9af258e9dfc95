"""How a round ends and how a stopped run goes on: commit, resume, and the operator's lines.

A round ends in :func:`commit_round`: the student's checkpoint, the history row (the commit
point), then the journal's ``round`` entry. A run that was stopped at any instant -- its
server process killed -- resumes (:func:`resume_point`) from its last committed round; the
round that was in progress is, by what the journal (:mod:`fedkd.fl.journal`) shows of it:

- *aggregated* (its teacher is on disk): finished from the saved teacher, nobody asked again;
- *released* (some client was asked to release its input) and not aggregated: recorded as
  abandoned and never asked again -- asking twice for one round would let a server difference
  two sums of the same round;
- otherwise: run again, identically (per-round randomness is seeded by (seed, round)).

So the resumed run's teachers equal those of a run that was never interrupted (with the
abandoned round skipped).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedkd.fl.config import FedConfig
from fedkd.fl.federation import Federation
from fedkd.fl.history import RoundRecord
from fedkd.fl.journal import log_fault, read_journal
from fedkd.fl.server_work import distill_round, new_student
from fedkd.models import FeatureModel

log = logging.getLogger("fedkd.server")


@dataclass
class RoundOutcome:
    """A finished round: its record, its teacher (``None`` if skipped) and its faults."""

    record: RoundRecord
    teacher: np.ndarray | None
    faults: list[dict[str, object]]


def note_faults(
    fed: Federation, record: RoundRecord, failed: dict[int, str]
) -> list[dict[str, object]]:
    """A round's faults, from ``node -> "stage: reason"``: into its record (the partition ids
    that dropped out, sorted, and each one's reason), one log line for each fault the journaled
    exchanges did not already log (replies the protocol refused after they arrived: malformed,
    duplicated, bad signatures), and returned as the journal lists them (stage, node,
    partition, reason)."""
    pairs = sorted((fed.partition_of(node), reason) for node, reason in failed.items())
    record.dropped, record.dropped_reasons = [p for p, _ in pairs], [r for _, r in pairs]
    logged = set() if fed.journal is None else fed.journal.logged
    faults: list[dict[str, object]] = []
    for node, reason in sorted(failed.items()):
        stage, _, why = reason.partition(": ")
        partition = fed.partition_of(node)
        if (record.round, node) not in logged:
            log_fault(record.round, stage, node, partition, why)
        faults.append({"stage": stage, "node": node, "partition": partition, "reason": why})
    return faults


def log_membership(fed: Federation, nodes: Sequence[int], server_round: int) -> None:
    """A line for each node that joined or left since the last round (operator's view).

    A derived population (a ``range`` of node ids: the Ray engine's) neither joins nor
    leaves, and listing it would cost the population, not the cohort: nothing to log."""
    if isinstance(nodes, range):
        return
    if fed.known_nodes:
        for node in sorted(set(nodes) - fed.known_nodes):
            log.info("round %d: node %s joined the federation", server_round, node)
        for node in sorted(fed.known_nodes - set(nodes)):
            partition = fed.partition_of(node)
            shown = "?" if partition < 0 else partition
            log.info("round %d: node %s (partition %s) left", server_round, node, shown)
    fed.known_nodes = set(nodes)


# ------------------------------------------------------------------------------ commit
def distill_config(config: FedConfig) -> FedConfig:
    """The config a round distills with: FedDF as published distills the averaged weights
    themselves (no moving average back towards the previous student)."""
    if config.method != "feddf":
        return config
    return dataclasses.replace(config, distill=dataclasses.replace(config.distill, ema=0.0))


def save_aggregated(
    fed: Federation, record: RoundRecord, teacher: np.ndarray, student: FeatureModel
) -> None:
    """Keep what a round learned before distilling it: the teacher, the record so far and,
    for FedDF as published, the averaged student distillation starts from.

    A server that dies during distillation then finishes the round on resume from these,
    without asking any client again.
    """
    fed.recorder.save_teacher(record.round, teacher)
    if fed.config.method == "feddf":
        torch.save(student.state_dict(), _start_file(fed, record.round))
    fed.recorder.write_json(f"teachers/round-{record.round:03d}.json", asdict(record))
    if fed.journal is not None:
        fed.journal.write("aggregated", round=record.round)


def distill_into(
    fed: Federation, student: FeatureModel, teacher: np.ndarray, record: RoundRecord
) -> None:
    """Distill ``student`` against the round's teacher and fill the record's figures."""
    config = distill_config(fed.config)
    distilled = distill_round(student, teacher, config, fed.split, server_round=record.round)
    record.teacher_accuracy = distilled.teacher_accuracy
    record.student_accuracy = distilled.student_accuracy
    record.distill_loss = distilled.distill_loss
    record.seconds_distill = distilled.seconds


def commit_round(fed: Federation, outcome: RoundOutcome, student: FeatureModel | None) -> None:
    """Checkpoint (completed rounds), history row, then the journal's ``round`` entry."""
    record = outcome.record
    fed.recorder.commit(record, student if record.status == "ok" else None)
    if fed.journal is not None:
        fed.journal.write(
            "round",
            round=record.round,
            status=record.status,
            reason=record.reason,
            sampled=record.sampled,
            survivors=record.survivors,
            faults=outcome.faults,
        )
    log_round(record, fed.config.num_rounds)


def log_round(record: RoundRecord, num_rounds: int) -> None:
    head = f"[{record.method}] round {record.round}/{num_rounds}"
    if record.status != "ok":
        log.warning("%s %s: %s", head, record.status, record.reason)
        return
    parts = [
        f"{name} {value:.4f}"
        for name, value in (
            ("student", record.student_accuracy),
            ("teacher", record.teacher_accuracy),
            ("clients", record.client_accuracy_mean),
        )
        if math.isfinite(value)
    ]
    if record.sampled:
        parts.append(f"{record.survivors}/{record.sampled} answered")
    log.info("%s: %s | %.1f s", head, " | ".join(parts), record.seconds)


# ------------------------------------------------------------------------------ resume
def resume_point(fed: Federation) -> tuple[int, FeatureModel]:
    """The first round to run and the student to start it from (its checkpoint, if resumed).

    The round the journal shows in progress is finished, abandoned or run again (module
    docstring). Clients keep nothing across Flower runs: a resumed FedMD client starts from a
    fresh model (with its warm-up epochs), as in round 1.
    """
    student = fed.recorder.load_student(new_student(fed.config, fed.split))
    rows = fed.recorder.rows
    next_round = (rows[-1].round if rows else 0) + 1
    state = (
        read_journal(fed.recorder.path, events=False)
        if fed.journal is None
        else fed.journal.replayed  # read as the run opened its journal, before any round
    )
    if state.open_round == next_round and next_round <= fed.config.num_rounds:
        if state.aggregated:
            _finish_from_teacher(fed, student, next_round)
        elif state.released:
            _abandon(fed, next_round, state.open_stage, len(state.release_asks[next_round]))
        else:
            log.info(
                "round %d was interrupted at stage %s, before any client was asked to release "
                "its input: running it again",
                next_round,
                state.open_stage,
            )
    rows = fed.recorder.rows
    return (rows[-1].round if rows else 0) + 1, student


def _abandon(fed: Federation, server_round: int, stage: str, asked: int) -> None:
    reason = (
        f"interrupted at stage {stage} after {asked} client(s) were asked to release their "
        "input; not asked again"
    )
    record = RoundRecord(
        round=server_round, method=fed.config.method, status="abandoned", reason=reason
    )
    fed.recorder.add(record)
    if fed.journal is not None:
        fed.journal.write("abandon", round=server_round, reason=reason)
    log.warning("round %d abandoned: %s", server_round, reason)


def _finish_from_teacher(fed: Federation, student: FeatureModel, server_round: int) -> None:
    start = time.perf_counter()
    folder = fed.recorder.path / "teachers"
    saved: dict[str, Any] = json.loads((folder / f"round-{server_round:03d}.json").read_text())
    values: dict[str, Any] = {k: math.nan if v is None else v for k, v in saved.items()}
    record = RoundRecord(**values)
    teacher = np.load(folder / f"round-{server_round:03d}.npy")
    log.info("round %d: finishing from its saved teacher (no client asked again)", server_round)
    if _start_file(fed, server_round).is_file():  # FedDF: the averaged weights
        student.load_state_dict(torch.load(_start_file(fed, server_round), weights_only=True))
    distill_into(fed, student, teacher, record)
    record.seconds += time.perf_counter() - start
    commit_round(fed, RoundOutcome(record, teacher, []), student)


def _start_file(fed: Federation, server_round: int) -> Path:
    return fed.recorder.path / "teachers" / f"round-{server_round:03d}-start.pt"
