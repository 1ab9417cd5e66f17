"""evaluate.split_images: held-out images, stratified by class."""

import pytest

from jmlnet_geo.evaluate import split_images


def test_the_rule_by_hand():
    # seed 0 visits c, a, b, d; share 0.5: x is in 3 images (target 1.5), y in 2 (target 1)
    by_image = {"a": {"x"}, "b": {"x"}, "c": {"y"}, "d": {"x", "y"}}
    assert split_images(by_image, share=0.5) == (["d"], ["a", "b", "c"])


def test_whole_images_on_one_side_each_class_held_out():
    by_image = {f"{i:03d}.jpg": {"ship"} | ({"tank"} if i % 10 == 3 else set()) for i in range(50)}
    train, val = split_images(by_image)
    assert sorted(train + val) == sorted(by_image) and not set(train) & set(val)
    assert train == sorted(train) and val == sorted(val)
    assert any("tank" in by_image[i] for i in val)  # the rare class (5 images) is not left out
    assert 9 <= len(val) <= 11  # about a fifth of the images


def test_validation_is_capped_and_the_split_is_seeded():
    by_image = {f"img{i}": {f"class{i}"} for i in range(10)}  # every image is some class's only
    train, val = split_images(by_image)
    assert len(val) == 3  # at most share * n + 1 images, even when every image is needed
    assert split_images(by_image) == (train, val)
    assert any(split_images(by_image, seed=s)[1] != val for s in range(1, 5))
    assert split_images(by_image, share=0) == (sorted(by_image), [])


def test_share_out_of_range():
    with pytest.raises(ValueError, match="share"):
        split_images({"a": {"x"}}, share=1.5)
