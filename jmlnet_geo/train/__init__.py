"""Training: Lightning modules for the segmenter (and detector) and the `jmlgeo train` pipeline."""
