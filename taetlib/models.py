"""Model registry. `create_model(name, num_classes, in_channels, mean, std, head)` is the one factory.

Every model takes [0,1] pixels and normalises inside, so attacks and eps live in pixel space.
`head` swaps the net's last nn.Linear for a cosine classifier (RoBal's CosPlus, HE's normalised head).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .errors import Registry, check_choice

__all__ = ["BasicBlock", "CosPlus", "Head", "HEADS", "HENorm", "MODELS", "Normalized", "PreActBlock", "ResNet",
           "WideResNet", "classifier", "create_model", "features_and_logits", "preact_resnet18", "register",
           "resnet18", "set_class_prior", "small_cnn", "wrn_28_10", "wrn_34_10"]

MODELS: dict[str, Callable[[int, int], nn.Module]] = Registry("model")


def register(name: str):
    def deco(fn):
        MODELS[name] = fn
        return fn
    return deco


class Normalized(nn.Module):
    """(x - mean) / std in front of a network; mean/std are buffers so they travel in state_dict."""
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def create_model(name: str, num_classes: int, in_channels: int = 3,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 head: str = "fc") -> nn.Module:
    check_choice("model", name, MODELS)
    check_choice("head", head, HEADS)
    mean = list(mean) if mean is not None else [0.5] * in_channels
    std = list(std) if std is not None else [0.5] * in_channels
    if len(mean) != in_channels or len(std) != in_channels:
        raise ValueError(f"mean/std have {len(mean)}/{len(std)} entries but in_channels={in_channels}; "
                         "give one value per channel.")
    net = MODELS[name](num_classes, in_channels)
    if head != "fc":
        fc = classifier(net)
        assert isinstance(fc, nn.Linear)   # a fresh network ends in nn.Linear
        parent, _, attr = _name_of(net, fc).rpartition(".")
        setattr(net.get_submodule(parent), attr, HEADS[head](fc.in_features, fc.out_features))
    return Normalized(net, mean, std)


# ---------------------------------------------------------------- classifier heads (docs/methods.md H1, H2)
class Head(nn.Module):
    """A classifier head that replaces the last nn.Linear: features [B, D] -> logits [B, C]."""


class CosPlus(Head):
    """RoBal's CosPlus classifier: z_c = scale * <h/|h|, W_c / (|W_c| + gamma)>, scale 1 in training.
    Its bias is a frozen zero in the official code, so it is left out. W ~ U(-1/sqrt(D), 1/sqrt(D)).
    log_prior (ln of the training class frequencies, filled by fit) serves RoBal-N's evaluation,
    z = s * cos - tau_p * ln pi, which `posthoc(s, tau_p)` switches on."""
    log_prior: torch.Tensor

    def __init__(self, in_features: int, num_classes: int, gamma: float = 0.03125):
        super().__init__()
        bound = 1 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.empty(num_classes, in_features).uniform_(-bound, bound))
        self.register_buffer("log_prior", torch.zeros(num_classes))
        self.gamma, self.scale, self.tau_p = gamma, 1.0, 0.0

    def posthoc(self, scale: float, tau_p: float) -> None:
        self.scale, self.tau_p = float(scale), float(tau_p)

    def forward(self, h):
        w = self.weight / (self.weight.norm(dim=1, keepdim=True) + self.gamma)
        z = F.linear(F.normalize(h, dim=1), w)
        if self.scale != 1.0:
            z = self.scale * z
        return z - self.tau_p * self.log_prior if self.tau_p else z


class HENorm(Head):
    """HE's head: z = <h/|h|, W_c>, no bias, every row of W renormalised to 1 in place before use, so the
    gradient is a plain linear layer's at the unit-norm W (projected SGD on the sphere). The official
    code renormalises in every forward; doing it once per change of W (the version counter moves on
    every optimiser step and load) is the same up to rounding, and leaves W untouched between the
    forwards of one step, so autograd never sees it modified under a pending backward."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.weight = nn.Linear(in_features, num_classes, bias=False).weight   # nn.Linear's init, as official
        self._seen = None

    def forward(self, h):
        w = self.weight
        if self._seen != (w._version, w.data_ptr()):
            with torch.no_grad():
                w.copy_(F.normalize(w, dim=1))
            self._seen = (w._version, w.data_ptr())
        return F.linear(F.normalize(h, dim=1), w)


HEADS: dict[str, Callable[[int, int], nn.Module]] = Registry("head", {"fc": nn.Linear, "cosplus": CosPlus,
                                                                      "he_norm": HENorm})


def classifier(model: nn.Module) -> nn.Module:
    """The model's classifier: its last nn.Linear or Head (net.fc for ResNet/WRN, net[-1] for small_cnn)."""
    found = [m for m in model.modules() if isinstance(m, (nn.Linear, Head))]
    if not found:
        raise ValueError(f"{type(model).__name__} has no nn.Linear classifier to hook or replace.")
    return found[-1]


def _name_of(model: nn.Module, module: nn.Module) -> str:
    return next(n for n, m in model.named_modules() if m is module)


def features_and_logits(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(penultimate features, logits) from one forward: the classifier's input, caught by a pre-hook."""
    seen = []
    handle = classifier(model).register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    try:
        logits = model(x)
    finally:
        handle.remove()
    return seen[-1], logits


def set_class_prior(model: nn.Module, counts: Sequence[int]) -> None:
    """Give the heads that keep the training prior (CosPlus, for RoBal-N's evaluation) ln(n_c / N)."""
    n = torch.tensor(list(counts), dtype=torch.float64)
    for head in model.modules():
        if isinstance(head, CosPlus):
            head.log_prior.copy_((n / n.sum()).log().to(head.log_prior))


# ---------------------------------------------------------------- small CNN (28x28, CPU default)
@register("small_cnn")
def small_cnn(num_classes: int, in_channels: int) -> nn.Module:
    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    return nn.Sequential(
        *block(in_channels, 32), nn.MaxPool2d(2),          # 28 -> 14
        *block(32, 64), nn.MaxPool2d(2),                   # 14 -> 7
        *block(64, 128), nn.AdaptiveAvgPool2d(4),          # 7 -> 4 (also fits 32x32 inputs)
        nn.Flatten(), nn.Linear(128 * 16, 256), nn.ReLU(inplace=True), nn.Linear(256, num_classes),
    )


# ---------------------------------------------------------------- ResNet-18, CIFAR variant
class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class PreActBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x):
        out = F.relu(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        return self.conv2(F.relu(self.bn2(out))) + skip


class ResNet(nn.Module):
    """3x3 stem, no max-pool (the CIFAR variant); `preact` switches to pre-activation blocks."""

    def __init__(self, num_classes: int, in_channels: int, blocks=(2, 2, 2, 2), preact: bool = False):
        super().__init__()
        block = PreActBlock if preact else BasicBlock
        self.preact = preact
        self.stem = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        self.stem_bn = nn.Identity() if preact else nn.BatchNorm2d(64)
        layers, cin = [], 64
        for i, n in enumerate(blocks):
            cout = 64 * 2 ** i
            for j in range(n):
                layers.append(block(cin, cout, 2 if (j == 0 and i > 0) else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.final_bn = nn.BatchNorm2d(cin) if preact else nn.Identity()
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        out = self.stem(x)
        out = out if self.preact else F.relu(self.stem_bn(out))
        out = self.layers(out)
        if self.preact:
            out = F.relu(self.final_bn(out))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


@register("resnet18")
def resnet18(num_classes: int, in_channels: int) -> nn.Module:
    return ResNet(num_classes, in_channels)


@register("preact_resnet18")
def preact_resnet18(num_classes: int, in_channels: int) -> nn.Module:
    return ResNet(num_classes, in_channels, preact=True)


# ---------------------------------------------------------------- Wide ResNets
class WideResNet(nn.Module):
    def __init__(self, depth: int, widen: int, num_classes: int, in_channels: int):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet depth={depth}: must be 6n+4 (e.g. 28, 34).")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.stem = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        layers, cin = [], widths[0]
        for i, w in enumerate(widths[1:]):
            for j in range(n):
                layers.append(PreActBlock(cin, w, 2 if (j == 0 and i > 0) else 1))  # WRNs are pre-activation
                cin = w
        self.layers = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(cin)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        out = F.relu(self.bn(self.layers(self.stem(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


@register("wrn_28_10")
def wrn_28_10(num_classes: int, in_channels: int) -> nn.Module:
    return WideResNet(28, 10, num_classes, in_channels)


@register("wrn_34_10")
def wrn_34_10(num_classes: int, in_channels: int) -> nn.Module:
    return WideResNet(34, 10, num_classes, in_channels)
