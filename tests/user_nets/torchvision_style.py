"""Networks written the way people write them, not with ge2mst's blocks: a CIFAR ResNet-20 in the
torchvision style (BatchNorm held as attributes, one ``self.relu`` called at two places, ``+=``,
``torch.flatten``) and a small VGG with functional activations of three spellings, max pooling
as a function, concatenation, ``view(x.size(0), -1)`` and dropout; and a CIFAR VGG written as
torchvision writes VGGs (a ``features`` Sequential made from a configuration list, ``nn.MaxPool2d``
modules, ``nn.ReLU(inplace=True)``, a ``classifier`` with dropout)."""

import torch
import torch.nn as nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        out = self.relu(out)
        return out


class ResNet(nn.Module):
    """He et al.'s CIFAR ResNet (ResNet-20 with the defaults: 0.27 M parameters)."""

    def __init__(self, layers=(3, 3, 3), num_classes=10, width=16):
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(width, layers[0])
        self.layer2 = self._make_layer(width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(width * 4, layers[2], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(width * 4, num_classes)

    def _make_layer(self, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes))
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.fc(x)


class VGG(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.b1 = nn.BatchNorm2d(16)
        self.c2 = nn.Conv2d(16, 32, 3, padding=1)
        self.b2 = nn.BatchNorm2d(32)
        self.c3 = nn.Conv2d(48, 32, 3, padding=1)
        self.drop = nn.Dropout(0.1)
        self.fc = nn.Linear(32 * 4 * 4, num_classes)

    def forward(self, x):
        x = F.relu(self.b1(self.c1(x)))
        x = F.max_pool2d(x, 2)
        y = torch.relu(self.b2(self.c2(x)))
        x = torch.cat([x, y], 1)
        x = self.c3(x).relu()
        x = nn.functional.max_pool2d(x, 2)
        x = F.avg_pool2d(x, 2)
        x = self.drop(x.view(x.size(0), -1))
        return self.fc(x)


def make_layers(cfg, batch_norm=True):
    layers, in_channels = [], 3
    for v in cfg:
        if v == "M":
            layers += [nn.MaxPool2d(kernel_size=2, stride=2)]
        else:
            conv = nn.Conv2d(in_channels, v, kernel_size=3, padding=1, bias=not batch_norm)
            norm = [nn.BatchNorm2d(v)] if batch_norm else []
            layers += [conv, *norm, nn.ReLU(inplace=True)]
            in_channels = v
    return nn.Sequential(*layers)


class CifarVGG(nn.Module):
    """Six 3x3 convolutions with BatchNorm, three 2x2 max pools, global average, dropout, linear
    (0.29 M parameters, 38 M multiply-accumulates per 32 x 32 image, like ResNet-20's 41 M)."""

    def __init__(self, cfg=(32, 32, "M", 64, 64, "M", 128, 128, "M"), num_classes=10):
        super().__init__()
        self.features = make_layers(cfg)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(cfg[-2], num_classes))

    def forward(self, x):
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


class ReLU6Net(nn.Module):
    """ReLU6 and hardtanh(0, a) clips, and an in-place relu_ whose tensor is read afterwards."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.ReLU6()
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = self.act(self.c1(x))
        y = self.c2(x)
        y.relu_()  # in place: y is read below
        z = F.hardtanh(y, 0.0, 3.0) + y
        return self.fc(F.adaptive_avg_pool2d(z, 1).flatten(1))
