"""Model zoo: forward shapes, exact parameter counts (hand-computed), classifier, registry."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from xbarlab.models import build_model, get_classifier, list_models, model_spec


@pytest.fixture(autouse=True)
def _one_thread() -> object:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def conv(cin: int, cout: int, k: int, bias: bool = False) -> int:
    return cin * cout * k * k + (cout if bias else 0)


def bn(c: int) -> int:
    return 2 * c


def fc(cin: int, cout: int, bias: bool = True) -> int:
    return cin * cout + (cout if bias else 0)


def resnet20_count(in_ch: int, classes: int, option_b: bool = False) -> int:
    total = conv(in_ch, 16, 3) + bn(16)
    cin = 16
    for c in (16, 32, 64):
        for b in range(3):
            total += conv(cin, c, 3) + bn(c) + conv(c, c, 3) + bn(c)
            if option_b and b == 0 and cin != c:
                total += conv(cin, c, 1) + bn(c)
            cin = c
    return total + fc(64, classes)


def resnet18_count(in_ch: int, classes: int) -> int:
    total = conv(in_ch, 64, 3) + bn(64)
    cin = 64
    for c in (64, 128, 256, 512):
        for b in range(2):
            total += conv(cin, c, 3) + bn(c) + conv(c, c, 3) + bn(c)
            if b == 0 and cin != c:
                total += conv(cin, c, 1) + bn(c)
            cin = c
    return total + fc(512, classes)


def vgg_count(cfg: list[int], in_ch: int, classes: int) -> int:
    total, cin = 0, in_ch
    for c in cfg:
        total += conv(cin, c, 3) + bn(c)
        cin = c
    return total + fc(cin, classes)


VGG16 = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]


@pytest.mark.parametrize(
    ("name", "kwargs", "expected"),
    [
        ("resnet20", {}, 269_722),  # He et al.: 0.27 M
        ("resnet20", {"in_channels": 1}, resnet20_count(1, 10)),
        ("resnet20", {"shortcut": "B"}, resnet20_count(3, 10, option_b=True)),
        ("resnet18", {}, 11_271_432),  # 200 TinyImageNet classes
        ("resnet18", {"num_classes": 10}, 11_173_962),  # the well-known CIFAR ResNet-18 count
        ("vgg16-bn", {}, vgg_count(VGG16, 3, 10)),  # 14,728,266 - 4,224 conv biases (BN follows)
        ("vgg-small", {}, vgg_count([32, 32, 64, 64, 128, 128], 1, 10)),
        ("lenet5", {}, 61_706),  # the classic LeNet-5 count
        (
            "lenet5",
            {"batch_norm": True},
            150 + 2400 + 48000 + 10080 + 850 + bn(6) + bn(16) + bn(120) + bn(84),
        ),
    ],
)
def test_exact_parameter_counts(name: str, kwargs: dict[str, object], expected: int) -> None:
    assert n_params(build_model(name, **kwargs)) == expected


def test_hand_counts_match_known_values() -> None:
    assert resnet20_count(3, 10) == 269_722
    assert resnet18_count(3, 200) == 11_271_432
    assert vgg_count(VGG16, 3, 10) == 14_728_266 - 4_224
    assert vgg_count([32, 32, 64, 64, 128, 128], 1, 10) == 288_170


@pytest.mark.parametrize(
    ("name", "kwargs", "shape"),
    [
        ("resnet20", {"in_channels": 1}, (2, 1, 28, 28)),
        ("resnet20", {}, (2, 3, 32, 32)),
        ("resnet18", {"width": 0.25}, (2, 3, 64, 64)),
        ("resnet18", {"width": 0.25, "num_classes": 10, "stem": "imagenet"}, (2, 3, 32, 32)),
        ("vgg16-bn", {"in_channels": 1, "width": 0.25}, (2, 1, 28, 28)),
        ("vgg16-bn", {"width": 0.25, "num_classes": 100}, (2, 3, 32, 32)),
        ("vgg-small", {}, (2, 1, 28, 28)),
        ("vgg-small", {"in_channels": 3}, (2, 3, 32, 32)),
        ("lenet5", {}, (2, 1, 28, 28)),
        ("lenet5", {"padding": 0, "in_channels": 3, "batch_norm": True}, (2, 3, 32, 32)),
    ],
)
def test_forward_shapes(name: str, kwargs: dict[str, object], shape: tuple[int, ...]) -> None:
    model = build_model(name, **kwargs)
    out = model(torch.randn(*shape))
    classes = int(kwargs.get("num_classes", model_spec(name).default_kwargs["num_classes"]))  # type: ignore[call-overload]
    assert out.shape == (shape[0], classes)
    assert torch.isfinite(out).all()


def test_full_resnet18_tinyimagenet_forward() -> None:
    model = build_model("resnet18").eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 200)


@pytest.mark.parametrize("name", [s.name for s in list_models()])
def test_classifier_is_last_linear_and_layers_are_plain(name: str) -> None:
    model = build_model(name, num_classes=7, width=0.25)
    clf = get_classifier(model)
    assert isinstance(clf, nn.Linear) and clf.out_features == 7
    assert [m for m in model.modules() if isinstance(m, nn.Linear)][-1] is clf
    allowed: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.BatchNorm1d)
    if name == "vit-tiny":  # attention (converted to analog projections), LayerNorm and the position embedding
        allowed += (nn.MultiheadAttention, nn.LayerNorm)
        assert [n for n, _ in model.named_parameters(recurse=False)] == ["pos_embed"]
    for mod in model.modules():
        if any(True for _ in mod.parameters(recurse=False)) and mod is not model:
            assert isinstance(mod, allowed), f"{name}: {type(mod).__name__} holds weights"


def test_width_multiplier_and_channels() -> None:
    narrow = build_model("resnet20", width=0.5)
    assert narrow.conv1.out_channels == 8 and get_classifier(narrow).in_features == 32
    wide = build_model("vgg-small", width=2)
    assert get_classifier(wide).in_features == 256
    assert build_model("lenet5", width=2).conv1.out_channels == 12
    assert build_model("resnet18", width=0.125, in_channels=1).conv1.in_channels == 1


def test_registry_and_argument_errors() -> None:
    specs = {s.name: s for s in list_models()}
    assert set(specs) == {"resnet20", "resnet18", "vgg16-bn", "vgg-small", "lenet5", "vit-tiny"}
    for s in specs.values():
        assert s.description and {"num_classes", "in_channels", "width"} <= set(s.default_kwargs)
    assert model_spec("ResNet_20").name == "resnet20" and model_spec("LeNet-5").name == "lenet5"
    model = build_model("resnet20", num_classes=5)
    assert model.xbarlab_model_name == "resnet20"
    assert model.xbarlab_model_kwargs == {"num_classes": 5, "in_channels": 3, "width": 1.0, "shortcut": "A"}
    with pytest.raises(KeyError, match="unknown model 'alexnet'"):
        build_model("alexnet")
    with pytest.raises(TypeError, match=r"unknown argument\(s\) depth; allowed: in_channels"):
        build_model("resnet20", depth=32)
    with pytest.raises(ValueError, match="width must be a number in"):
        build_model("vgg-small", width=0)
    with pytest.raises(ValueError, match="num_classes must be an int >= 1"):
        build_model("lenet5", num_classes=0)
    with pytest.raises(ValueError, match="shortcut must be 'A'"):
        build_model("resnet20", shortcut="C")
    with pytest.raises(ValueError, match=r"needs inputs of at least 10×10 pixels, got \(8, 8\)"):
        build_model("lenet5")(torch.randn(1, 1, 8, 8))
    assert build_model("lenet5", padding=3)(torch.randn(1, 1, 8, 8)).shape == (1, 10)


def test_same_seed_same_weights() -> None:
    torch.manual_seed(0)
    a = build_model("resnet20")
    torch.manual_seed(0)
    b = build_model("resnet20")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
