"""The first convolution for any number of bands: RGB kernels adapted, or a fresh layer.

Used by the factories (:mod:`jmlnet_geo.models.segmenter`, :mod:`jmlnet_geo.models.detector`)
and by :func:`jmlnet_geo.models.state_dict.load_matching`, which adapts pretrained RGB kernels
while it loads them.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["adapt_first_conv", "first_conv_replaced"]


def adapt_first_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Turn pretrained RGB kernels into kernels for ``in_channels`` bands.

    - ``in_channels == 3``: an unchanged copy.
    - ``in_channels > 3``: bands 0-2 take the RGB kernels, every further band the mean of the
      three RGB kernels; then everything is multiplied by ``3 / in_channels``.
    - ``in_channels == 2``: the R and G kernels, times ``3 / 2``.
    - ``in_channels == 1``: the sum of the three RGB kernels (their mean times 3).

    The factor ``3 / in_channels`` keeps the magnitude of the activations: when all bands carry
    the same standardised signal (strongly correlated bands, or a grey image), the adapted
    convolution gives exactly the output the RGB one gave for that signal on R, G and B
    (``in_channels`` >= 3 and 1; for 2 bands, nearly). Band order beyond RGB carries no meaning
    for ImageNet weights, so extra bands start equal and training tells them apart.

    Args:
        weight: RGB kernels, shape (O, 3, kh, kw), any float dtype.
        in_channels: Number of input bands, >= 1.

    Returns:
        Kernels of shape (O, in_channels, kh, kw), same dtype and device as ``weight``.

    Raises:
        ValueError: ``weight`` is not (O, 3, kh, kw) or ``in_channels`` < 1.
    """
    if weight.ndim != 4 or weight.shape[1] != 3:
        raise ValueError(f"expected RGB kernels of shape (O, 3, kh, kw), got {tuple(weight.shape)}")
    if in_channels < 1:
        raise ValueError(f"in_channels must be at least 1, got {in_channels}")
    weight = weight.detach()
    if in_channels == 3:
        return weight.clone()
    mean = weight.mean(dim=1, keepdim=True)
    if in_channels == 1:
        kernels = mean
    elif in_channels == 2:
        kernels = weight[:, :2]
    else:
        kernels = torch.cat([weight, mean.expand(-1, in_channels - 3, -1, -1)], dim=1)
    return (kernels * (3.0 / in_channels)).contiguous()


def first_conv_replaced(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """A new convolution like ``conv`` reading ``in_channels`` bands (freshly initialised).

    The weights are initialised like torchvision's ResNet (Kaiming normal, fan-out); pretrained
    weights, if any, are put in later by :func:`jmlnet_geo.models.state_dict.load_matching`.

    Args:
        conv: The model's first convolution.
        in_channels: Number of input bands.

    Returns:
        ``conv`` itself when it already reads ``in_channels`` bands, else a new ``nn.Conv2d``.
    """
    if conv.in_channels == in_channels:
        return conv
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        kernel_size=conv.kernel_size,  # type: ignore[arg-type]
        stride=conv.stride,  # type: ignore[arg-type]
        padding=conv.padding,  # type: ignore[arg-type]
        dilation=conv.dilation,  # type: ignore[arg-type]
        groups=conv.groups,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    )
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    if new.bias is not None:
        nn.init.zeros_(new.bias)
    return new
