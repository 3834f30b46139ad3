"""ResNet-18 and ResNet-50 in plain PyTorch, with seeded random weights, and as image bundles.

The image benchmarks (benchmarks/images.py, benchmarks/images_gpu.py) and their
tests need a real ImageNet-sized classifier without a download. torchvision is
not importable here (its PyPI wheels want another torch build), so the two
architectures are written out as He et al. (2015) and torchvision define them:
basic blocks [2, 2, 2, 2] for 18 layers, bottlenecks [3, 4, 6, 3] for 50, the
same layer names, so a torchvision state dict would load. Weights are random
with a fixed seed: the benchmarks measure throughput, not accuracy.

`make_bundle` exports one as a user would (`torch.export` to model.pt2, or
`torch.onnx.export` to model.onnx) and writes the bundle's JSON parts beside it:
inputs.json (one float32 NCHW tensor), images.json (resize crop 224, ImageNet
mean and std) and outputs.json (the classes). It also keeps the state dict,
which Beam's own `PytorchModelHandlerTensor` loads into `ResNet`.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import torch
from torch import nn

DEPTHS = {18: ('basic', (2, 2, 2, 2)), 50: ('bottleneck', (3, 4, 6, 3))}
SIZE = 224
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
STATE_DICT = 'state_dict.pt'  # beside the model in a bundle: what Beam's PyTorch handler loads
SEED = 0


class BasicBlock(nn.Module):
  expansion = 1

  def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.relu = nn.ReLU(inplace=True)
    self.downsample = downsample

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    return self.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
  expansion = 4

  def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)  # the stride on the 3×3, as torchvision's v1.5
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes * 4)
    self.relu = nn.ReLU(inplace=True)
    self.downsample = downsample

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu(self.bn2(self.conv2(out)))
    return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNet(nn.Module):
  """ResNet-`depth` (18 or 50) from NCHW float images to `classes` probabilities (softmax included, as
  outputs.json's classification expects probabilities)."""

  def __init__(self, depth: int = 18, classes: int = 1000):
    super().__init__()
    if depth not in DEPTHS:
      raise ValueError(f'ResNet depth is one of {sorted(DEPTHS)}, got {depth}')
    kind, counts = DEPTHS[depth]
    block = BasicBlock if kind == 'basic' else Bottleneck
    self.inplanes = 64
    self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(64)
    self.relu = nn.ReLU(inplace=True)
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    self.layer1 = self._layer(block, 64, counts[0], 1)
    self.layer2 = self._layer(block, 128, counts[1], 2)
    self.layer3 = self._layer(block, 256, counts[2], 2)
    self.layer4 = self._layer(block, 512, counts[3], 2)
    self.avgpool = nn.AdaptiveAvgPool2d(1)
    self.fc = nn.Linear(512 * block.expansion, classes)
    for m in self.modules():  # torchvision's initialisation
      if isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')

  def _layer(self, block, planes: int, count: int, stride: int) -> nn.Sequential:
    downsample = None
    if stride != 1 or self.inplanes != planes * block.expansion:
      downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                                 nn.BatchNorm2d(planes * block.expansion))
    layers = [block(self.inplanes, planes, stride, downsample)]
    self.inplanes = planes * block.expansion
    layers += [block(self.inplanes, planes) for _ in range(1, count)]
    return nn.Sequential(*layers)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
    x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
    return torch.softmax(self.fc(torch.flatten(self.avgpool(x), 1)), dim=1)


def resnet(depth: int, classes: int = 1000, seed: int = SEED) -> ResNet:
  """A seeded ResNet-`depth` in eval mode (BatchNorm uses its running statistics)."""
  torch.manual_seed(seed)
  return ResNet(depth, classes).eval()


def class_names(classes: int) -> list[str]:
  return [f'class-{i:04d}' for i in range(classes)]


def image_spec(size: int = SIZE) -> dict[str, Any]:
  """images.json for an ImageNet classifier: shorter side to 256/224 of `size`, centre crop, mean and std, NCHW."""
  return {'tensor': 'image', 'color': 'RGB',
          'resize': {'policy': 'crop', 'size': [size, size], 'shorter_side': size * 256 // 224},
          'mean': list(MEAN), 'std': list(STD), 'layout': 'NCHW', 'dtype': 'float32'}


def export(model: nn.Module, path: str, fmt: str = 'torch', size: int = SIZE) -> str:
  """Saves `model` as a user would, any batch size: `torch.export` (.pt2) or `torch.onnx.export` (.onnx)."""
  example = torch.zeros((2, 3, size, size))
  if fmt == 'torch':
    program = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim('batch')},))
    torch.export.save(program, path)
  elif fmt == 'onnx':
    torch.onnx.export(model, (example,), path, input_names=['image'], output_names=['probabilities'],
                      dynamic_axes={'image': {0: 'batch'}, 'probabilities': {0: 'batch'}}, dynamo=False)
  else:
    raise ValueError(f'format is torch or onnx, got {fmt!r}')
  return path


def make_bundle(output: str, depth: int, *, fmt: str = 'torch', classes: int = 1000, seed: int = SEED,
                size: int = SIZE) -> str:
  """The seeded ResNet-`depth` as an image bundle at `output` (made once); returns `output`."""
  from models.bundle import Outputs, write_bundle
  from models.inputs import InputContract
  from transforms.images.spec import ImageSpec
  if os.path.exists(os.path.join(output, 'metadata.json')):
    return output
  os.makedirs(output, exist_ok=True)
  model = resnet(depth, classes, seed)
  model_file = 'model.pt2' if fmt == 'torch' else 'model.onnx'
  export(model, os.path.join(output, model_file), fmt, size)
  torch.save(model.state_dict(), os.path.join(output, STATE_DICT))
  inputs = InputContract.from_dict({'shape': 'tensors', 'tensors': [
      {'name': 'image', 'dtype': 'float32', 'shape': [None, 3, size, size]}]})
  write_bundle(output, features=None, outputs=Outputs('classification', tuple(class_names(classes))),
               name=f'resnet{depth}', version=f'random-seed{seed}', inputs=inputs,
               images=ImageSpec.from_dict(image_spec(size)), format=fmt, model_file=model_file,
               model_params={'depth': depth, 'classes': classes})
  return output
