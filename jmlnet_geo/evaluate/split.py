"""Held-out images for evaluation: a seeded train / validation split by image, stratified by class.

Scoring a model on the images it was trained on says little; splitting tiles or boxes of one
image between the two sets leaks the image. :func:`split_images` keeps whole images together
and gives every class about the same share of its images in validation, so that a rare class
is not left out of one side by chance.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Collection, Mapping


def split_images(
    classes_by_image: Mapping[str, Collection[str]], share: float = 0.2, seed: int = 0
) -> tuple[list[str], list[str]]:
    """Split images into training and validation, stratified by the classes they hold.

    The images are visited in their sorted order shuffled with ``random.Random(seed)``; an image
    goes to validation while one of its classes has fewer validation images than ``share`` of
    the images that hold it, and while validation holds fewer than ``share * len(images) + 1``
    images. The same input, share and seed always give the same split.

    Args:
        classes_by_image: The classes of each image's boxes (image names or paths as keys; for
            a box layer with an ``image`` column:
            ``frame.groupby("image")["class"].apply(set).to_dict()``).
        share: The share of each class's images (and about that of all images) to hold out.
        seed: Seed of the visiting order.

    Returns:
        (training images, validation images), each sorted; together every key once.

    Raises:
        ValueError: ``share`` is not in [0, 1].
    """
    if not 0 <= share <= 1:
        raise ValueError(f"share {share}: give a share of the images in [0, 1]")
    images = sorted(classes_by_image)
    random.Random(seed).shuffle(images)
    holding = Counter(c for image in images for c in set(classes_by_image[image]))
    target = {c: share * n for c, n in holding.items()}
    held: Counter[str] = Counter()
    validation = []
    for image in images:
        classes = set(classes_by_image[image])
        needed = any(held[c] < target[c] for c in classes)
        if needed and len(validation) < share * len(images) + 1:
            validation.append(image)
            held.update(classes)
    chosen = set(validation)
    return sorted(i for i in images if i not in chosen), sorted(validation)
