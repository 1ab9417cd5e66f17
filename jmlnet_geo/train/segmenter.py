"""The segmenter's Lightning module: DeepLab v3 on proposal stacks with a multi-label loss.

One module serves both of the paper's stages: stage 1 is ``loss="ce"`` on one proposal, stage 2
the chosen multi-label loss over Z proposals, starting from stage 1's weights. Validation, when
a ``truth`` raster is among the batch keys, accumulates a confusion matrix and logs ``val_miou``
(background included, as the paper).
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
from torch import nn

from jmlnet_geo.box_losses import box_consistency_loss, colour_similarity, lab_colours
from jmlnet_geo.losses import labelled_pixels, multi_label_loss
from jmlnet_geo.normalization import Normalization
from jmlnet_geo.train.data import box_masks, random_flips
from jmlnet_geo.train.optim import OptimizerSettings
from jmlnet_geo.vocabulary import IGNORE


class SegmenterTask(L.LightningModule):
    """Train a segmenter (logits (N, K+1, H, W)) from proposal rasters named in ``proposals``."""

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        normalization: Normalization,
        proposals: Sequence[str],
        loss: str,
        steps: int,
        lr: float,
        optimizer: str = "sgd",
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        poly_power: float = 0.9,
        warmup: int = 0,
        seed: int = 0,
        box_loss_weight: float = 0.0,
        box_pairwise_weight: float = 1.0,
        box_margin: float = 0.5,
        box_skip_neighbours: bool = False,
        box_outside_weight: float = 1.0,
        box_outside_hard: bool = False,
    ) -> None:
        """Set up the task.

        Args:
            model: Maps float32 (N, C, H, W) standardised tiles to logits (N, num_classes, H, W).
            num_classes: K + 1 (background included).
            normalization: Band standardisation (applied here, on the device).
            proposals: Batch keys of the Z proposal rasters, in order.
            loss: ``ce`` (on the first proposal), ``ma``, ``mm`` or ``bmm``.
            steps: Total optimiser steps of this stage (for the poly schedule).
            lr: Peak learning rate.
            optimizer: ``sgd`` (the paper's) or ``adamw``.
            momentum: SGD momentum.
            weight_decay: Weight decay.
            poly_power: Exponent of the poly decay.
            warmup: Steps of linear warm-up before the decay (0: none, the paper's).
            seed: Seed of the random flips.
            box_loss_weight: Weight of the box-consistency loss added to ``loss``
                (:func:`jmlnet_geo.box_losses.box_consistency_loss`; 0: off).
            box_pairwise_weight: Weight of that loss's pairwise term (0: not computed).
            box_margin: Its projection term's margin beside each box (fraction of the side).
            box_skip_neighbours: Leave other boxes of a box's class out of that margin.
            box_outside_weight: Weight of its term scoring pixels outside every box against
                background.
            box_outside_hard: That term on the pixels predicted as a class only.
        """
        super().__init__()
        self.model = model
        self.num_classes = num_classes
        self.normalization = normalization
        self.proposals = list(proposals)
        self.loss_name = loss
        self.box_loss_weight = box_loss_weight
        self.box_pairwise_weight = box_pairwise_weight
        self.box_margin = box_margin
        self.box_skip_neighbours = box_skip_neighbours
        self.box_outside_weight = box_outside_weight
        self.box_outside_hard = box_outside_hard
        self.optimizer_settings = OptimizerSettings(
            optimizer, lr, steps, momentum, weight_decay, poly_power, warmup
        )
        self.flips = torch.Generator().manual_seed(seed)
        self.register_buffer("confusion", torch.zeros(num_classes, num_classes, dtype=torch.int64))

    def forward(self, image: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """Raw float32 (N, C, H, W) tiles -> logits (N, num_classes, H, W)."""
        return self.model(self.normalization.apply(image, valid))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        """One step: flips, then :meth:`batch_loss`."""
        batch = random_flips(batch, ["valid", *self.proposals], self.flips)
        loss, n = self.batch_loss(batch), len(batch["image"])
        if not torch.isfinite(loss.detach()).all():
            from jmlnet_geo.errors import JmlGeoError

            raise JmlGeoError(
                f"training diverged: the loss is {float(loss.detach())} at step "
                f"{self.global_step + 1}; no bundle was written. Lower --lr, or check the scenes "
                "for extreme values (jmlgeo info SCENE)"
            )
        self.log("train_loss", loss, prog_bar=False, on_step=True, batch_size=n)
        self.log("lr", self.optimizers().param_groups[0]["lr"], on_step=True, batch_size=1)
        return loss

    def batch_loss(self, batch: dict) -> torch.Tensor:
        """The loss of a batch: its proposal stack (N, Z, H, W) under ``loss``.

        Plus the box-consistency loss when its weight is not 0, on the pixels some proposal
        labels (:func:`jmlnet_geo.losses.labelled_pixels`): nodata and the boxes
        ``--drop-doubtful`` dropped are 255 in every layer, *ignore*, which its outside term
        (outside every kept box) and projection term (in a kept box's margin) would otherwise
        score as background.
        """
        logits = self(batch["image"], batch["valid"])
        labels = torch.stack([batch[p] for p in self.proposals], dim=1).long()
        labels[~batch["valid"].unsqueeze(1).expand_as(labels)] = IGNORE
        inside = box_masks(batch["boxes"], logits.shape[-2], logits.shape[-1])
        loss = multi_label_loss(self.loss_name, logits, labels, inside)
        if self.box_loss_weight:
            similarity = None
            if self.box_pairwise_weight:
                similarity = colour_similarity(lab_colours(batch["image"], batch["valid"]))
            box_loss = box_consistency_loss(
                logits.float(), batch["boxes"], batch["labels"], inside, similarity,
                labelled_pixels(labels), self.box_pairwise_weight, self.box_margin,
                self.box_skip_neighbours, self.box_outside_weight, self.box_outside_hard,
            )  # fmt: skip
            loss = loss + self.box_loss_weight * box_loss
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """Accumulate the confusion matrix of the tiles against ``batch["truth"]``."""
        logits = self(batch["image"], batch["valid"])
        pred = logits.argmax(1)
        truth = batch["truth"].long()
        counted = (truth != IGNORE) & batch["valid"]
        index = truth[counted] * self.num_classes + pred[counted]
        self.confusion += torch.bincount(index, minlength=self.num_classes**2).view(
            self.num_classes, self.num_classes
        )

    def on_validation_epoch_end(self) -> None:
        """Log ``val_miou`` (classes present in truth or prediction) and reset the matrix."""
        confusion = self.trainer.strategy.reduce(self.confusion, reduce_op="sum")
        tp = confusion.diag().double()
        union = confusion.sum(0).double() + confusion.sum(1).double() - tp
        present = union > 0
        miou = (tp[present] / union[present]).mean() if present.any() else tp.new_zeros(())
        self.log("val_miou", miou.float(), sync_dist=False)
        self.confusion.zero_()

    def configure_optimizers(self) -> dict:
        """SGD (the paper's) or AdamW; optional warm-up, then poly decay per step."""
        return self.optimizer_settings.configure(self.model.parameters())
