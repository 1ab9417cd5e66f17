"""Model factories for the two presets: the DeepLab v3 segmenter and the Faster R-CNN detector.

``segmenter.build_segmenter`` and ``detector.build_detector`` build a model for any number of
bands and load pretrained weights when they are on this machine (``backbones`` holds the offline
EfficientNet-Lite0 ImageNet weights and the first-conv adaptation for bands other than RGB).
Nothing here downloads. This package's ``__init__`` stays light: import the submodules (which
import torch, torchvision, timm and segmentation_models_pytorch) where they are used.
"""
