"""Tests of the ensemble-teacher rules in fedkd.distill.teacher."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedkd.distill import (
    TEACHER_RULES,
    TeacherConfig,
    TeacherRule,
    available_teacher_rules,
    client_contribution,
    ensemble_teacher,
    get_teacher_rule,
    register_teacher_rule,
    teacher_from_sum,
)
from fedkd.distill.teacher import _TEACHER_RULES


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _logits(seed: int, num_public: int = 7, num_classes: int = 4) -> np.ndarray:
    return np.random.default_rng(seed).normal(scale=3.0, size=(num_public, num_classes))


def _same_distribution(a: np.ndarray, b: np.ndarray) -> None:
    np.testing.assert_allclose(_softmax(a), _softmax(b), rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------- single-client identity


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_identical_clients_give_that_client(temperature: float) -> None:
    client = _logits(0)
    copies = [client, client.copy(), client.copy()]
    tempered = client / temperature
    logits_teacher = ensemble_teacher(
        copies, config=TeacherConfig(rule="logits", temperature=temperature)
    )
    np.testing.assert_allclose(logits_teacher, tempered, rtol=1e-5)
    probs_teacher = ensemble_teacher(
        copies, config=TeacherConfig(rule="probs", temperature=temperature)
    )
    _same_distribution(probs_teacher, tempered)
    # DS-FL: the client's own distribution sharpened, softmax(z / (T * Ts))
    dsfl_teacher = ensemble_teacher(
        copies,
        config=TeacherConfig(rule="dsfl", temperature=temperature, sharpen_temperature=0.5),
    )
    _same_distribution(dsfl_teacher, tempered / 0.5)


def test_output_is_float32_logits_of_public_shape() -> None:
    teacher = ensemble_teacher([_logits(0), _logits(1)], config=TeacherConfig())
    assert teacher.shape == (7, 4)
    assert teacher.dtype == np.float32


# --------------------------------------------------------------------------- weights


@pytest.mark.parametrize("rule", TEACHER_RULES)
def test_sample_count_weights_are_honoured(rule: str) -> None:
    a, b = _logits(0), _logits(1)
    config = TeacherConfig(rule=rule, sharpen_temperature=1.0)  # dsfl with Ts=1 == probs
    weighted = ensemble_teacher([a, b], config=config, num_samples=[30, 10])
    # a client of weight 3 is three copies of it
    repeated = ensemble_teacher([a, a, a, b], config=config)
    np.testing.assert_allclose(weighted, repeated, rtol=1e-5, atol=1e-6)
    if rule == "logits":
        np.testing.assert_allclose(weighted, 0.75 * a + 0.25 * b, rtol=1e-5)
    else:
        expected = 0.75 * _softmax(a) + 0.25 * _softmax(b)
        np.testing.assert_allclose(np.exp(weighted), expected, rtol=1e-5)


def test_zero_sample_client_is_ignored() -> None:
    a, b = _logits(0), _logits(1)
    teacher = ensemble_teacher([a, b], config=TeacherConfig(rule="logits"), num_samples=[5, 0])
    np.testing.assert_allclose(teacher, a, rtol=1e-5)


@pytest.mark.parametrize("rule", TEACHER_RULES)
def test_class_weighting_picks_the_expert_on_its_classes(rule: str) -> None:
    # Client 0 saw only classes 0-1, client 1 only classes 2-3. On the public set, client 0 is
    # confident on class 0 and client 1 wrongly vetoes it; per-class weights follow the expert.
    num_public = 5
    expert = np.tile([8.0, 0.0, -4.0, -4.0], (num_public, 1))
    other = np.tile([-8.0, -4.0, 4.0, 0.0], (num_public, 1))
    counts = [np.array([50, 50, 0, 0]), np.array([0, 0, 50, 50])]
    config = TeacherConfig(rule=rule, class_weighting=True)
    teacher = ensemble_teacher([expert, other], config=config, label_counts=counts)
    if rule == "logits":
        np.testing.assert_allclose(teacher[:, :2], expert[:, :2], rtol=1e-5)
        np.testing.assert_allclose(teacher[:, 2:], other[:, 2:], rtol=1e-5)
    else:
        # per-class mean probability: each column comes from the client that saw the class
        mean = np.concatenate([_softmax(expert)[:, :2], _softmax(other)[:, 2:]], axis=1)
        expected = mean if rule == "probs" else mean**2 / (mean**2).sum(axis=1, keepdims=True)
        np.testing.assert_allclose(np.exp(teacher), expected, rtol=1e-5)
    assert np.all(teacher.argmax(axis=1) == 0)
    # without class weighting the confident veto of client 1 drags class 0 down
    plain = ensemble_teacher([expert, other], config=TeacherConfig(rule=rule))
    assert _softmax(plain)[0, 0] < _softmax(teacher)[0, 0]


def test_class_weighting_needs_label_counts() -> None:
    config = TeacherConfig(class_weighting=True)
    with pytest.raises(ValueError, match="label_counts"):
        client_contribution(_logits(0), config=config, label_counts=None, num_samples=10)
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        client_contribution(_logits(0), config=config, label_counts=np.ones(3), num_samples=3)
    with pytest.raises(ValueError, match=">= 0"):
        client_contribution(
            _logits(0), config=config, label_counts=np.array([1, -1, 0, 0]), num_samples=0
        )


# --------------------------------------------------------------------------- sum of contributions


@settings(max_examples=20, deadline=None)
@given(
    rule=st.sampled_from(TEACHER_RULES),
    class_weighting=st.booleans(),
    num_clients=st.integers(1, 5),
    seed=st.integers(0, 1000),
)
def test_sum_of_contributions_equals_ensemble_teacher(
    rule: str, class_weighting: bool, num_clients: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    config = TeacherConfig(rule=rule, temperature=2.0, class_weighting=class_weighting)
    logits = [rng.normal(scale=4.0, size=(6, 3)) for _ in range(num_clients)]
    counts = [rng.integers(1, 20, size=3) for _ in range(num_clients)]
    sizes = [int(c.sum()) for c in counts]
    vectors = [
        client_contribution(z, config=config, label_counts=c, num_samples=n).to_vector()
        for z, c, n in zip(logits, counts, sizes, strict=True)
    ]
    assert all(v.shape == (6 * 3 + 3,) and v.dtype == np.float64 for v in vectors)
    summed = np.sum(vectors, axis=0)  # what secure aggregation reveals
    from_sum = teacher_from_sum(summed, num_public=6, num_classes=3, config=config)
    direct = ensemble_teacher(logits, config=config, label_counts=counts, num_samples=sizes)
    np.testing.assert_array_equal(from_sum, direct)
    assert np.all(np.isfinite(from_sum))


def test_contribution_layout() -> None:
    z = _logits(0, num_public=2, num_classes=3)
    config = TeacherConfig(rule="logits", temperature=2.0, class_weighting=True)
    contribution = client_contribution(
        z, config=config, label_counts=np.array([1, 0, 4]), num_samples=5
    )
    np.testing.assert_allclose(contribution.weights, [1.0, 0.0, 4.0])
    np.testing.assert_allclose(contribution.values, (z / 2.0 * [1.0, 0.0, 4.0]).reshape(-1))
    vector = contribution.to_vector()
    np.testing.assert_allclose(vector[-3:], contribution.weights)


# --------------------------------------------------------------------------- zero-weight classes


@pytest.mark.parametrize("rule", TEACHER_RULES)
def test_zero_weight_class_falls_back_without_nan(rule: str) -> None:
    a, b = _logits(0), _logits(1)
    counts = [np.array([5, 3, 0, 0]), np.array([2, 0, 7, 0])]  # nobody saw class 3
    config = TeacherConfig(rule=rule, class_weighting=True)
    teacher = ensemble_teacher([a, b], config=config, label_counts=counts)
    assert np.all(np.isfinite(teacher))
    if rule == "logits":
        np.testing.assert_allclose(teacher[:, 3], teacher[:, :3].mean(axis=1), rtol=1e-5)
    elif rule == "probs":
        np.testing.assert_allclose(np.exp(teacher[:, 3]), 0.25, rtol=1e-5)


def test_all_zero_weights_give_uniform_teacher_with_warning() -> None:
    config = TeacherConfig(rule="probs", class_weighting=True)
    with pytest.warns(UserWarning, match="uniform teacher"):
        teacher = ensemble_teacher([_logits(0)], config=config, label_counts=[np.zeros(4)])
    np.testing.assert_array_equal(teacher, np.zeros((7, 4), dtype=np.float32))


def test_probability_rules_survive_underflow_and_quantisation_noise() -> None:
    huge = np.array([[1000.0, -1000.0, 0.0]])  # softmax underflows to exact 0
    for rule in ("probs", "dsfl"):
        config = TeacherConfig(rule=rule)
        assert np.all(np.isfinite(ensemble_teacher([huge], config=config)))
        noisy = np.array([1.0, -1e-9, 0.0, 1.0, 1.0, 1.0])  # a slightly negative mean prob
        assert np.all(
            np.isfinite(teacher_from_sum(noisy, num_public=1, num_classes=3, config=config))
        )


# --------------------------------------------------------------------------- errors and registry


def test_temperature_must_be_positive_with_warning() -> None:
    with pytest.warns(UserWarning, match="temperature"), pytest.raises(ValueError, match="> 0"):
        TeacherConfig(temperature=0.0)
    with (
        pytest.warns(UserWarning, match="sharpen_temperature"),
        pytest.raises(ValueError, match="sharpen_temperature"),
    ):
        TeacherConfig(sharpen_temperature=-1.0)


def test_unknown_rule_lists_known_rules() -> None:
    with pytest.raises(KeyError, match="known rules.*dsfl.*logits.*probs"):
        TeacherConfig(rule="median")
    with pytest.raises(KeyError, match="known rules"):
        get_teacher_rule("median")


def test_registry_refuses_duplicates_and_accepts_new_rules() -> None:
    assert set(TEACHER_RULES) <= set(available_teacher_rules())
    with pytest.raises(ValueError, match="already registered"):
        register_teacher_rule(get_teacher_rule("probs"))
    rule = TeacherRule(
        name="test-max-logit",
        client_transform=lambda z, config: z / config.temperature,
        finalize=lambda mean, defined, config: mean * 2.0,
    )
    register_teacher_rule(rule)
    try:
        teacher = ensemble_teacher([_logits(0)], config=TeacherConfig(rule="test-max-logit"))
        np.testing.assert_allclose(teacher, 2.0 * _logits(0), rtol=1e-5)
    finally:
        del _TEACHER_RULES["test-max-logit"]


def test_bad_inputs_are_named() -> None:
    config = TeacherConfig()
    with pytest.raises(ValueError, match="num_public, num_classes"):
        client_contribution(np.zeros(4), config=config, label_counts=None, num_samples=1)
    with pytest.raises(ValueError, match="NaN"):
        client_contribution(
            np.full((2, 2), np.nan), config=config, label_counts=None, num_samples=1
        )
    with pytest.raises(ValueError, match="num_samples"):
        client_contribution(np.zeros((2, 2)), config=config, label_counts=None, num_samples=-1)
    with pytest.raises(ValueError, match=r"P\*C \+ C"):
        teacher_from_sum(np.zeros(5), num_public=2, num_classes=2, config=config)
    with pytest.raises(ValueError, match="at least one"):
        ensemble_teacher([], config=config)
    with pytest.raises(ValueError, match="same shape"):
        ensemble_teacher([np.zeros((2, 3)), np.zeros((3, 3))], config=config)
    with pytest.raises(ValueError, match="num_samples has 1 entries for 2"):
        ensemble_teacher([np.zeros((2, 3))] * 2, config=config, num_samples=[1])


def test_no_warning_for_normal_use() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ensemble_teacher([_logits(0), _logits(1)], config=TeacherConfig(rule="dsfl"))


def test_entropy_weighting_silences_single_class_clients() -> None:
    from fedkd.distill.teacher import label_entropy

    # Client 0 saw only class 0 and votes class 0 everywhere; client 1 saw both and is right.
    logits0 = np.array([[5.0, -5.0], [5.0, -5.0]])
    logits1 = np.array([[5.0, -5.0], [-5.0, 5.0]])
    counts = [np.array([100.0, 0.0]), np.array([50.0, 50.0])]
    config = TeacherConfig(rule="probs", class_weighting=True, entropy_weighting=True)
    teacher = ensemble_teacher([logits0, logits1], config=config, label_counts=counts)
    np.testing.assert_array_equal(teacher.argmax(1), [0, 1])
    plain = ensemble_teacher([logits0, logits1], config=TeacherConfig(rule="probs"))
    assert plain[1, 0] > teacher[1, 0]  # without it the single-class client drags sample 1
    assert label_entropy(np.array([7, 0, 0])) == 0.0
    assert abs(label_entropy(np.array([1, 1])) - np.log(2)) < 1e-12


@pytest.mark.parametrize("rule", TEACHER_RULES)
def test_noisy_weights_cannot_rerank_classes_without_class_weighting(rule: str) -> None:
    # Client-level DP noises the summed weights too. Without class weighting they are C copies
    # of one number, so noise on them (one class's even negative) must not change any row's
    # ranking -- a per-class denominator would drop or inflate whole columns.
    config = TeacherConfig(rule=rule, class_weighting=False, entropy_weighting=False)
    logits = [_logits(seed) for seed in range(3)]
    summed = np.sum(
        [
            client_contribution(z, config=config, label_counts=None, num_samples=10).to_vector()
            for z in logits
        ],
        axis=0,
    )
    clean = teacher_from_sum(summed, num_public=7, num_classes=4, config=config)
    noisy = summed.copy()
    noisy[-4:] += [-40.0, 25.0, 3.0, -1.0]  # the summed weights were 30 each
    teacher = teacher_from_sum(noisy, num_public=7, num_classes=4, config=config)
    np.testing.assert_array_equal(np.argsort(teacher, axis=1), np.argsort(clean, axis=1))
