"""Backbones that several chapters' models stand on.

- :mod:`~utils.models.backbones.vgg`: VGG16 (chapter 03's FCN; with batch norm
  and pooling indices for SegNet, chapter 05; dilated for Dilation10,
  chapter 06);
- :mod:`~utils.models.backbones.resnet`: ResNet-50/101 at output stride 32, 16
  or 8 (DeepLabV3+, chapter 07; Mask R-CNN's FPN, chapter 08);
- :mod:`~utils.models.backbones.frozen_bn`: ``FrozenBatchNorm2d``, the batch
  norm a detector fine-tunes its backbone with (chapter 08).

Each returns a dict of named stage outputs (VGG16: ``conv1`` .. ``conv5``,
``pool1`` .. ``pool5``, ``fc7``, and the pools' ``indices1`` .. on request;
ResNet: ``layer1`` .. ``layer4``) and exposes ``channels`` and ``strides`` by
the same names, so a model built on one picks the maps it needs by name.

Each takes images already normalised with ImageNet's statistics; the models
built on them normalise images in [0, 1] themselves. ``width`` multiplies every
channel count (1.0 = the paper's), so that the ``ci`` and ``cpu`` profiles can
train a slim copy of the same architecture. Torchvision-format ImageNet weights
load with :func:`utils.models.load_torchvision`.
"""
