"""Tests of fedkd.models: shapes, features, registry, sizes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fedkd.models import (
    FeatureModel,
    available_models,
    build_model,
    count_parameters,
    model_size_bytes,
    register_model,
)
from fedkd.models import registry as registry_module
from fedkd.models.mobilenet import small_image_setting

MODEL_NAMES = ("mlp", "cnn", "cnn_plain", "resnet18", "mobilenet_v2")
INPUT_SHAPES = ((1, 8, 8), (1, 28, 28), (3, 32, 32))
NUM_CLASSES = 10


@pytest.fixture
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_module, "_MODELS", dict(registry_module._MODELS))


@pytest.mark.parametrize("shape", INPUT_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_features_and_logits(name: str, shape: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    model = build_model(name, input_shape=shape, num_classes=NUM_CLASSES).eval()
    x = torch.rand(3, *shape)
    with torch.no_grad():
        features = model.forward_features(x)
        logits = model(x)
    assert isinstance(model, FeatureModel)
    assert list(features) == [*model.feature_names, "logits"]
    assert tuple(features["logits"].shape) == (3, NUM_CLASSES)
    torch.testing.assert_close(logits, features["logits"], rtol=0, atol=0)
    for feature_name in model.feature_names:
        feature = features[feature_name]
        assert feature.ndim in (2, 4), feature_name
        assert feature.shape[0] == 3 and min(feature.shape[1:]) >= 1
        assert torch.isfinite(feature).all()


EXPECTED_SHAPES = {
    ("mlp", (1, 8, 8)): {"fc1": (128,), "fc2": (64,)},
    ("cnn", (1, 8, 8)): {
        "conv1": (32, 4, 4),
        "conv2": (64, 2, 2),
        "conv3": (128, 2, 2),
        "fc": (128,),
    },
    ("cnn", (3, 32, 32)): {
        "conv1": (32, 16, 16),
        "conv2": (64, 8, 8),
        "conv3": (128, 8, 8),
        "fc": (128,),
    },
    ("cnn_plain", (1, 28, 28)): {"conv1": (32, 14, 14), "conv2": (64, 7, 7), "fc": (64,)},
    ("resnet18", (1, 8, 8)): {
        "layer1": (64, 8, 8),
        "layer2": (128, 4, 4),
        "layer3": (256, 2, 2),
        "layer4": (512, 1, 1),
        "pool": (512,),
    },
    ("resnet18", (3, 32, 32)): {
        "layer1": (64, 32, 32),
        "layer2": (128, 16, 16),
        "layer3": (256, 8, 8),
        "layer4": (512, 4, 4),
        "pool": (512,),
    },
    ("mobilenet_v2", (1, 8, 8)): {
        "stage1": (16, 8, 8),
        "stage2": (24, 8, 8),
        "stage3": (32, 4, 4),
        "stage4": (96, 2, 2),
        "stage5": (1280, 1, 1),
        "pool": (1280,),
    },
    ("mobilenet_v2", (3, 32, 32)): {
        "stage1": (16, 32, 32),
        "stage2": (24, 32, 32),
        "stage3": (32, 16, 16),
        "stage4": (96, 8, 8),
        "stage5": (1280, 4, 4),
        "pool": (1280,),
    },
}


@pytest.mark.parametrize(("name", "shape"), list(EXPECTED_SHAPES), ids=str)
def test_feature_shapes(name: str, shape: tuple[int, int, int]) -> None:
    model = build_model(name, input_shape=shape, num_classes=NUM_CLASSES).eval()
    with torch.no_grad():
        features = model.forward_features(torch.rand(2, *shape))
    got = {key: tuple(value.shape[1:]) for key, value in features.items() if key != "logits"}
    assert got == EXPECTED_SHAPES[(name, shape)]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_parameter_gets_a_gradient(name: str) -> None:
    model = build_model(name, input_shape=(1, 8, 8), num_classes=NUM_CLASSES).train()
    x, y = torch.rand(4, 1, 8, 8), torch.arange(4)
    nn.functional.cross_entropy(model(x), y).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not missing


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_state_dict_round_trip(name: str) -> None:
    torch.manual_seed(1)
    source = build_model(name, input_shape=(1, 8, 8), num_classes=NUM_CLASSES).eval()
    torch.manual_seed(2)
    target = build_model(name, input_shape=(1, 8, 8), num_classes=NUM_CLASSES).eval()
    x = torch.rand(2, 1, 8, 8)
    assert not torch.equal(source(x), target(x))
    target.load_state_dict(source.state_dict())
    torch.testing.assert_close(source(x), target(x))


def test_cnn_plain_is_the_reference_fedavg_model() -> None:
    # ../shared/reference/fedavg_plain.py's PlainCNN, copied: the same computation, weights
    # renamed only.
    class Reference(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1 = nn.Conv2d(1, 32, 3, padding=1)
            self.c2 = nn.Conv2d(32, 64, 3, padding=1)
            self.f1 = nn.Linear(64 * 7 * 7, 64)
            self.f2 = nn.Linear(64, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = nn.functional.max_pool2d(nn.functional.relu(self.c1(x)), 2)
            x = nn.functional.max_pool2d(nn.functional.relu(self.c2(x)), 2)
            return self.f2(nn.functional.relu(self.f1(x.flatten(1))))

    ours = build_model("cnn_plain", input_shape=(1, 28, 28), num_classes=10)
    reference = Reference()
    assert count_parameters(ours) == count_parameters(reference)
    names = {"c1": "conv1", "c2": "conv2", "f1": "fc", "f2": "head"}
    ours.load_state_dict(
        {
            names[k.split(".")[0]] + "." + k.split(".")[1]: v
            for k, v in reference.state_dict().items()
        }
    )
    x = torch.rand(5, 1, 28, 28)
    torch.testing.assert_close(ours(x), reference(x))


def test_cnn_group_norm_trains_on_single_sample_batch() -> None:
    model = build_model("cnn", input_shape=(1, 8, 8), num_classes=NUM_CLASSES).train()
    assert any(isinstance(m, nn.GroupNorm) for m in model.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    nn.functional.cross_entropy(model(torch.rand(1, 1, 8, 8)), torch.tensor([3])).backward()


@pytest.mark.parametrize("name", ("resnet18", "mobilenet_v2"))
def test_single_sample_batch_on_8x8_needs_group_norm(name: str) -> None:
    x = torch.rand(1, 1, 8, 8)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        build_model(name, input_shape=(1, 8, 8), num_classes=NUM_CLASSES).train()(x)
    grouped = build_model(name, input_shape=(1, 8, 8), num_classes=NUM_CLASSES, norm="group")
    assert grouped.train()(x).shape == (1, NUM_CLASSES)


@pytest.mark.parametrize(
    ("norm", "layer"), [("batch", nn.BatchNorm2d), ("group", nn.GroupNorm), ("none", None)]
)
@pytest.mark.parametrize("name", ("cnn", "resnet18", "mobilenet_v2"))
def test_norm_option(name: str, norm: str, layer: type[nn.Module] | None) -> None:
    model = build_model(name, input_shape=(1, 8, 8), num_classes=NUM_CLASSES, norm=norm)
    kinds = {type(m) for m in model.modules()}
    norm_kinds = kinds & {nn.BatchNorm2d, nn.GroupNorm}
    assert norm_kinds == ({layer} if layer else set())
    model.eval()
    assert model(torch.rand(1, 1, 8, 8)).shape == (1, NUM_CLASSES)


def test_unknown_norm_lists_accepted() -> None:
    with pytest.raises(ValueError, match="group, batch, none"):
        build_model("cnn", input_shape=(1, 8, 8), num_classes=10, norm="layer")


def test_mobilenet_setting_never_strides_a_single_pixel() -> None:
    assert [row[3] for row in small_image_setting(32)] == [1, 1, 2, 2, 1, 2, 1]
    assert [row[3] for row in small_image_setting(4)] == [1, 1, 2, 2, 1, 1, 1]
    model = build_model("mobilenet_v2", input_shape=(3, 2, 2), num_classes=5).eval()
    assert model(torch.rand(2, 3, 2, 2)).shape == (2, 5)


def test_mlp_hidden_widths() -> None:
    model = build_model("mlp", input_shape=(1, 8, 8), num_classes=4, hidden=(32, 16, 8))
    assert model.feature_names == ("fc1", "fc2", "fc3")
    features = model.forward_features(torch.rand(5, 1, 8, 8))
    assert [tuple(f.shape) for f in features.values()] == [(5, 32), (5, 16), (5, 8), (5, 4)]
    with pytest.raises(ValueError, match="hidden"):
        build_model("mlp", input_shape=(1, 8, 8), num_classes=4, hidden=())


def test_count_parameters_by_hand() -> None:
    model = build_model("mlp", input_shape=(1, 8, 8), num_classes=10)
    assert count_parameters(model) == (64 * 128 + 128) + (128 * 64 + 64) + (64 * 10 + 10)
    model.head.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == count_parameters(model) - 650


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_sizes_consistent(name: str) -> None:
    small = build_model(name, input_shape=(1, 8, 8), num_classes=NUM_CLASSES)
    wide = build_model(name, input_shape=(3, 8, 8), num_classes=NUM_CLASSES + 5)
    params = count_parameters(small)
    assert params == sum(p.numel() for p in small.parameters()) > 0
    assert count_parameters(wide) > params
    assert model_size_bytes(small) >= 4 * params  # float32 weights plus serialization overhead
    assert model_size_bytes(wide) > model_size_bytes(small)


def test_registry_lists_builtins() -> None:
    assert set(MODEL_NAMES) <= set(available_models())
    assert available_models() == sorted(available_models())


def test_unknown_model_lists_known_names() -> None:
    known = "cnn, cnn_plain, cnn_small, mlp, mobilenet_v2, resnet18"
    with pytest.raises(ValueError, match=f"unknown model .vgg.*{known}"):
        build_model("vgg", input_shape=(1, 8, 8), num_classes=10)


@pytest.mark.usefixtures("isolated_registry")
def test_register_model_and_refuse_duplicates() -> None:
    def tiny(*, input_shape: tuple[int, int, int], num_classes: int) -> FeatureModel:
        return build_model("mlp", input_shape=input_shape, num_classes=num_classes, hidden=(4,))

    register_model("tiny", tiny)
    assert "tiny" in available_models()
    assert count_parameters(build_model("tiny", input_shape=(1, 2, 2), num_classes=2)) == 30
    with pytest.raises(ValueError, match="already registered"):
        register_model("tiny", tiny)
    with pytest.raises(ValueError, match="already registered"):
        register_model("cnn", tiny)
    with pytest.raises(ValueError, match="non-empty"):
        register_model("", tiny)


@pytest.mark.usefixtures("isolated_registry")
def test_factory_must_return_feature_model() -> None:
    register_model("plain", lambda **_: nn.Linear(2, 2))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not a FeatureModel"):
        build_model("plain", input_shape=(1, 2, 2), num_classes=2)


def test_unknown_option_lists_accepted() -> None:
    with pytest.raises(TypeError, match="does not accept depth; accepted options: dropout, hidden"):
        build_model("mlp", input_shape=(1, 8, 8), num_classes=10, depth=3)


@pytest.mark.parametrize(
    ("shape", "classes", "message"),
    [
        ((8, 8), 10, "input_shape"),
        ((1, 0, 8), 10, "input_shape"),
        ((1.0, 8, 8), 10, "input_shape"),
        ((1, 8, 8), 1, "num_classes"),
    ],
)
def test_bad_build_arguments(shape: tuple[int, ...], classes: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_model("cnn", input_shape=shape, num_classes=classes)  # type: ignore[arg-type]


def test_bad_inputs_are_named() -> None:
    cnn = build_model("cnn", input_shape=(1, 8, 8), num_classes=10)
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        cnn(torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError, match="at least 4x4"):
        cnn(torch.rand(2, 1, 2, 2))
    with pytest.raises(ValueError, match="at least 4x4"):
        build_model("cnn", input_shape=(1, 3, 3), num_classes=10)
    mlp = build_model("mlp", input_shape=(1, 8, 8), num_classes=10)
    with pytest.raises(ValueError, match="8x8"):
        mlp(torch.rand(2, 1, 28, 28))
