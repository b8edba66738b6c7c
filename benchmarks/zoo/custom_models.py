"""Two detectors written in torch, shaped like the ones users deploy.

* :class:`YoloV8Style`: a YOLOv8n-sized detector (width 0.25, depth 0.33: ~3.2 M parameters):
  Conv-BN-SiLU, C2f blocks (``chunk`` -> Split), SPPF with MaxPool k5, an FPN-PAN neck with
  nearest ``nn.Upsample(scale_factor=2)`` and Concat, and decoupled heads (box: 4 x 16 DFL bins,
  class: 80) giving three raw outputs, one per stride 8, 16 and 32 (640x640 -> 80x80, 40x40,
  20x20, 144 channels each).
* :class:`DBTextDetector`: a DB-style text detector: a ResNet-18 trunk, the DB FPN (1x1 lateral
  convs, nearest top-down upsampling, 3x3 convs, nearest upsampling of every level to 1/4 scale,
  Concat) and the DB head (3x3 conv, ConvTranspose x2, bilinear upsample x2, 3x3 conv, Sigmoid):
  one probability map at full resolution.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ConvBnSiLU", "C2f", "SPPF", "YoloV8Style", "DBTextDetector"]

YOLO_CLASSES = 80
YOLO_REG_MAX = 16
YOLO_WIDTHS = (16, 32, 64, 128, 256)  # YOLOv8n: (64, 128, 256, 512, 1024) x 0.25
YOLO_DEPTHS = (1, 2, 2, 1)  # YOLOv8: (3, 6, 6, 3) x 0.33
DB_INNER = 256


class ConvBnSiLU(nn.Sequential):
    """Conv2d (no bias) + BatchNorm2d + SiLU, 'same' padding."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 1, stride: int = 1) -> None:
        super().__init__(nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False),
                         nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.03), nn.SiLU())


class Bottleneck(nn.Module):
    """Two 3x3 ConvBnSiLU, with a residual add when ``shortcut``."""

    def __init__(self, channels: int, shortcut: bool) -> None:
        super().__init__()
        self.cv1 = ConvBnSiLU(channels, channels, 3)
        self.cv2 = ConvBnSiLU(channels, channels, 3)
        self.add = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """YOLOv8's C2f: 1x1 conv, split in two halves, ``n`` bottlenecks chained on the second half,
    every intermediate concatenated, 1x1 conv."""

    def __init__(self, c_in: int, c_out: int, n: int, shortcut: bool) -> None:
        super().__init__()
        self.hidden = c_out // 2
        self.cv1 = ConvBnSiLU(c_in, 2 * self.hidden)
        self.cv2 = ConvBnSiLU((2 + n) * self.hidden, c_out)
        self.m = nn.ModuleList(Bottleneck(self.hidden, shortcut) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = list(self.cv1(x).chunk(2, 1))
        for block in self.m:
            parts.append(block(parts[-1]))
        return self.cv2(torch.cat(parts, 1))


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: 1x1 conv, three chained MaxPool k5 s1, Concat, 1x1 conv."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 5) -> None:
        super().__init__()
        hidden = c_in // 2
        self.cv1 = ConvBnSiLU(c_in, hidden)
        self.cv2 = ConvBnSiLU(4 * hidden, c_out)
        self.m = nn.MaxPool2d(kernel, 1, kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = [self.cv1(x)]
        for _ in range(3):
            parts.append(self.m(parts[-1]))
        return self.cv2(torch.cat(parts, 1))


def _yolo_backbone() -> nn.ModuleList:
    """Stem, then (downsample conv, C2f) x 4 and SPPF: outputs at strides 8, 16, 32 are
    indices 4, 6 and 9."""
    w, d = YOLO_WIDTHS, YOLO_DEPTHS
    return nn.ModuleList([
        ConvBnSiLU(3, w[0], 3, 2), ConvBnSiLU(w[0], w[1], 3, 2), C2f(w[1], w[1], d[0], True),
        ConvBnSiLU(w[1], w[2], 3, 2), C2f(w[2], w[2], d[1], True),
        ConvBnSiLU(w[2], w[3], 3, 2), C2f(w[3], w[3], d[2], True),
        ConvBnSiLU(w[3], w[4], 3, 2), C2f(w[4], w[4], d[3], True), SPPF(w[4], w[4])])


def _branch(c_in: int, hidden: int, c_out: int) -> nn.Sequential:
    """Two 3x3 ConvBnSiLU and a 1x1 conv with bias: one branch of a decoupled head."""
    return nn.Sequential(ConvBnSiLU(c_in, hidden, 3), ConvBnSiLU(hidden, hidden, 3),
                         nn.Conv2d(hidden, c_out, 1))


class DecoupledHead(nn.Module):
    """One level of YOLOv8's Detect: a box branch (4 x reg_max) and a class branch, concatenated."""

    def __init__(self, c_in: int, box_hidden: int, cls_hidden: int) -> None:
        super().__init__()
        self.box = _branch(c_in, box_hidden, 4 * YOLO_REG_MAX)
        self.cls = _branch(c_in, cls_hidden, YOLO_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.box(x), self.cls(x)], 1)


class YoloV8Style(nn.Module):
    """YOLOv8n-sized detector; ``forward`` returns the raw (box, class) maps at strides 8/16/32."""

    def __init__(self) -> None:
        super().__init__()
        w = YOLO_WIDTHS
        self.backbone = _yolo_backbone()
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.top_p4 = C2f(w[4] + w[3], w[3], 1, False)
        self.top_p3 = C2f(w[3] + w[2], w[2], 1, False)
        self.down_p3 = ConvBnSiLU(w[2], w[2], 3, 2)
        self.out_p4 = C2f(w[2] + w[3], w[3], 1, False)
        self.down_p4 = ConvBnSiLU(w[3], w[3], 3, 2)
        self.out_p5 = C2f(w[3] + w[4], w[4], 1, False)
        box_hidden = max(16, w[2] // 4, 4 * YOLO_REG_MAX)
        cls_hidden = max(w[2], min(YOLO_CLASSES, 100))
        self.heads = nn.ModuleList(DecoupledHead(c, box_hidden, cls_hidden) for c in w[2:])

    def _features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Backbone outputs at strides 8, 16 and 32."""
        taps = []
        for index, layer in enumerate(self.backbone):
            x = layer(x)
            if index in (4, 6, 9):
                taps.append(x)
        return taps[0], taps[1], taps[2]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c3, c4, c5 = self._features(x)
        t4 = self.top_p4(torch.cat([self.up(c5), c4], 1))
        p3 = self.top_p3(torch.cat([self.up(t4), c3], 1))
        p4 = self.out_p4(torch.cat([self.down_p3(p3), t4], 1))
        p5 = self.out_p5(torch.cat([self.down_p4(p4), c5], 1))
        return self.heads[0](p3), self.heads[1](p4), self.heads[2](p5)


def _conv_bn_relu(c_in: int, c_out: int, kernel: int) -> nn.Sequential:
    """Conv2d (no bias) + BatchNorm2d + ReLU, 'same' padding."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class DBTextDetector(nn.Module):
    """DB-style text detector: ResNet-18 trunk, DB FPN, DB head ending in Sigmoid."""

    def __init__(self) -> None:
        super().__init__()
        from torchvision.models import resnet18

        trunk = resnet18(weights=None)
        self.stem = nn.Sequential(trunk.conv1, trunk.bn1, trunk.relu, trunk.maxpool)
        self.stages = nn.ModuleList([trunk.layer1, trunk.layer2, trunk.layer3, trunk.layer4])
        quarter = DB_INNER // 4
        self.lateral = nn.ModuleList(nn.Conv2d(c, DB_INNER, 1, bias=False)
                                     for c in (64, 128, 256, 512))
        self.smooth = nn.ModuleList(nn.Conv2d(DB_INNER, quarter, 3, padding=1, bias=False)
                                    for _ in range(4))
        self.up2 = nn.Upsample(scale_factor=2, mode="nearest")
        self.to_quarter = nn.ModuleList(nn.Upsample(scale_factor=f, mode="nearest")
                                        for f in (2, 4, 8))
        self.head = nn.Sequential(
            _conv_bn_relu(DB_INNER, quarter, 3),
            nn.ConvTranspose2d(quarter, quarter, 2, 2), nn.BatchNorm2d(quarter),
            nn.ReLU(inplace=True),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(quarter, 1, 3, padding=1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        lat = [conv(f) for conv, f in zip(self.lateral, feats, strict=True)]
        for level in (2, 1, 0):  # top-down: in4 += up(in5), in3 += up(in4), in2 += up(in3)
            lat[level] = lat[level] + self.up2(lat[level + 1])
        maps = [conv(f) for conv, f in zip(self.smooth, lat, strict=True)]
        fused = [maps[0]] + [up(m) for up, m in zip(self.to_quarter, maps[1:], strict=True)]
        return self.head(torch.cat(fused[::-1], 1))
