"""Reading what users bring (scenes, box layers, datasets) and writing what we make."""
