"""Proposals: pixel pseudo labels made from boxes, one scene-aligned class raster per method."""
