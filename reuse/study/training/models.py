"""Models: UNet, PSPNet and a skip-free control, built by :func:`build_model`, and the
classifiers of notebooks 06 and 07 (torchvision's ResNet-18, MTCNN's ONet).

All three are small, BatchNorm CNNs that scale by ``width`` (channels of the first
stage) and ``depth`` (number of down-sampling stages). A "layer" in this project is a
convolution, named by its module path; :func:`conv_layer_names` lists them in forward
order. A convolution that feeds BatchNorm has no bias: BN subtracts the batch mean, so
such a bias gets no gradient and Adam would move it by rounding alone (the companion
paper's observation C4 is therefore tested on the biases that do learn: transposed
convolutions and output heads). Builders never move to a device.

- UNet: Ronneberger et al. 2015, encoder-decoder with skip connections.
- PSPNet: Zhao et al. 2017, residual backbone with a dilated last stage and a
  pyramid pooling module over bins (1, 2, 3, 6).
- plain: the UNet with its skip connections removed (a conv auto-encoder / FCN).
- ONet: the output network of MTCNN's face detector (Zhang et al. 2016, arXiv 1604.02878),
  whose pretrained weights :mod:`reuse.study.training.pretrained` reads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ARCHITECTURES = ("unet", "pspnet", "plain")  # the dense-task grid
CLASSIFIERS = ("resnet18", "onet")  # for classification: torchvision's (notebook 06), MTCNN's (07)


def _conv_bn(cin: int, cout: int, dilation: int = 1, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _DoubleConv(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__(_conv_bn(cin, cout), _conv_bn(cout, cout))


class _Up(nn.Module):
    """Transposed-conv upsampling, then a double conv over [upsampled, skip]."""

    def __init__(self, cin: int, cout: int, skips: bool):
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cout, 2, stride=2)
        self.conv = _DoubleConv(2 * cout if skips else cout, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        x = self.up(x)
        return self.conv(x if skip is None else torch.cat([x, skip], 1))


class UNet(nn.Module):
    """UNet with ``depth`` poolings; ``skips=False`` gives the plain control.

    Input ``[N, C, H, W]`` with H, W divisible by ``2**depth``; output ``[N, out, H, W]``.
    """

    def __init__(self, in_channels: int, out_channels: int, width: int = 8, depth: int = 2,
                 skips: bool = True):
        super().__init__()
        self.skips = skips
        widths = [width * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList()
        cin = in_channels
        for w in widths[:-1]:
            self.down.append(_DoubleConv(cin, w))
            cin = w
        self.bottleneck = _DoubleConv(widths[-2], widths[-1])
        self.up = nn.ModuleList(_Up(w_low, w, skips)
                                for w_low, w in zip(widths[::-1][:-1], widths[::-1][1:]))
        self.head = nn.Conv2d(widths[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottleneck(x)
        for up, skip in zip(self.up, reversed(skips)):
            x = up(x, skip if self.skips else None)
        return self.head(x)


class _ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.conv1 = _conv_bn(cin, cout, dilation, stride)
        self.conv2 = nn.Sequential(nn.Conv2d(cout, cout, 3, padding=dilation, dilation=dilation,
                                             bias=False), nn.BatchNorm2d(cout))
        self.shortcut = (nn.Identity() if cin == cout and stride == 1 else
                         nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class _PyramidPooling(nn.Module):
    def __init__(self, channels: int, bins: tuple[int, ...]):
        super().__init__()
        self.bins = bins
        reduced = max(channels // len(bins), 1)
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels, reduced, 1, bias=False), nn.BatchNorm2d(reduced),
                          nn.ReLU(inplace=True))
            for _ in bins)
        self.out_channels = channels + reduced * len(bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [F.interpolate(branch(F.adaptive_avg_pool2d(x, b)), size=size, mode="bilinear",
                                align_corners=False) for b, branch in zip(self.bins, self.branches)]
        return torch.cat([x, *pooled], 1)


class PSPNet(nn.Module):
    """A small PSPNet: a stride-2 stem, ``depth`` residual stages (the middle ones strided,
    the last one dilated instead), pyramid pooling over ``bins``, a 3x3 head and a 1x1
    classifier, upsampled back to the input size. Output stride ``2**max(depth-1, 1)``.
    """

    def __init__(self, in_channels: int, out_channels: int, width: int = 8, depth: int = 2,
                 bins: tuple[int, ...] = (1, 2, 3, 6)):
        super().__init__()
        self.stem = _conv_bn(in_channels, width, stride=2)
        stages, cin = [], width
        for i in range(depth):
            cout = width * 2 ** (i + 1)
            last = i == depth - 1 and depth > 1
            stages.append(_ResBlock(cin, cout, stride=2 if 0 < i < depth - 1 else 1,
                                    dilation=2 if last else 1))
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.ppm = _PyramidPooling(cin, bins)
        self.head = _conv_bn(self.ppm.out_channels, width * 2)
        self.classifier = nn.Conv2d(width * 2, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        y = self.classifier(self.head(self.ppm(self.stages(self.stem(x)))))
        return F.interpolate(y, size=size, mode="bilinear", align_corners=False)


class ONet(nn.Module):
    """MTCNN's ONet as a classifier: ``[N, 3, 48, 48]`` (scaled as MTCNN scales its input,
    ``(255 x - 127.5) / 128``) -> logits ``[N, n_classes]`` of ``dense6_1``. Module names as
    ``facenet_pytorch.models.mtcnn.ONet`` (conv1-conv4, prelu1-prelu5, dense5, dense6_1), so
    its pretrained state loads by name (bar the bounding-box and landmark heads, which a
    classifier does not use); ``dense5`` reads the conv features transposed
    (``permute(0, 3, 2, 1)``), as there. No BatchNorm."""

    def __init__(self, n_classes: int = 2):
        super().__init__()
        if not isinstance(n_classes, int) or n_classes < 2:
            raise ValueError(f"n_classes={n_classes!r}; expected an integer >= 2")
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, kernel_size=3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, kernel_size=2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x)).permute(0, 3, 2, 1).contiguous()
        return self.dense6_1(self.prelu5(self.dense5(x.flatten(1))))


def build_model(architecture: str, task: str, in_channels: int, out_channels: int,
                width: int = 8, depth: int = 2) -> nn.Module:
    """One of :data:`ARCHITECTURES` for a dense ``task`` ('segmentation': logits per class;
    'autoencoder': one reconstruction channel, squashed by the task's loss), or one of
    :data:`CLASSIFIERS` for 'classification' (3 input channels; ``width`` and ``depth``
    unused): torchvision's model with ``weights=None`` and ``num_classes=out_channels``, so its
    checkpoints load into ``torchvision.models.resnet18(num_classes=...)`` as they are, or
    :class:`ONet` with ``out_channels`` classes (48 px inputs)."""
    from .data import CLASSIFICATION, DENSE_TASKS

    if architecture in CLASSIFIERS:
        if task != CLASSIFICATION or in_channels != 3:
            raise ValueError(f"architecture={architecture!r} with task={task!r}, in_channels="
                             f"{in_channels}; allowed: task 'classification' with 3 input channels")
        if architecture == "onet":
            return ONet(out_channels)
        import torchvision  # seconds of imports (torch._dynamo) that only a classifier needs

        return getattr(torchvision.models, architecture)(weights=None, num_classes=out_channels)
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture={architecture!r}; allowed: {', '.join(ARCHITECTURES + CLASSIFIERS)}")
    if task not in DENSE_TASKS:
        raise ValueError(f"task={task!r}; allowed with {architecture}: {', '.join(DENSE_TASKS)}")
    if width < 1 or depth < 1:
        raise ValueError(f"width={width}, depth={depth}; both must be >= 1")
    if architecture == "pspnet":
        return PSPNet(in_channels, out_channels, width, depth)
    return UNet(in_channels, out_channels, width, depth, skips=architecture == "unet")


def conv_layer_names(model: nn.Module, example: torch.Tensor | None = None) -> list[str]:
    """Names of the model's convolutions (``Conv2d`` / ``ConvTranspose2d``) in forward order.

    With ``example`` (an input batch), the order is the order they run in, found with
    forward hooks, which works for any CNN; without it, the registration order (which
    is the forward order for this package's models, as the tests check).
    """
    convs = {name: m for name, m in model.named_modules()
             if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))}
    if example is None:
        return list(convs)
    order: list[str] = []
    hooks = [m.register_forward_hook(lambda mod, inp, out, n=name: order.append(n))
             for name, m in convs.items()]
    try:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(example)
        model.train(was_training)
    finally:
        for h in hooks:
            h.remove()
    return list(dict.fromkeys(order))


def head_layer(model: nn.Module, example: torch.Tensor | None = None) -> str:
    """The output convolution: the last one in forward order (see :func:`conv_layer_names`).

    For segmentation its output channel k is class k, so swapping it between pairs whose
    classes differ relabels classes rather than reusing features.
    """
    names = conv_layer_names(model, example)
    if not names:
        raise ValueError("the model has no Conv2d / ConvTranspose2d layer")
    return names[-1]
