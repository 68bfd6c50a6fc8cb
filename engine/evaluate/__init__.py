"""Evaluating and exploring learned representations, on plain arrays.

Given the representation h (N x D_h) or projection z (N x D_z) of every image of a folder,
with integer labels (-1 where an image has no class), these modules compute
(:mod:`engine.evaluate.embed` makes those arrays from a run):

- :mod:`engine.evaluate.maps`: 2-D maps (UMAP, PCA) for the scatter plot, cached on disk;
- :mod:`engine.evaluate.neighbours`: exact cosine nearest-neighbour search;
- :mod:`engine.evaluate.knn`: weighted k-nearest-neighbour accuracy (Wu et al., 2018), the
  stratified train/test split and saving results;
- :mod:`engine.evaluate.probe`: the linear evaluation protocol (a linear classifier on frozen
  features, as in SimCLR);
- :mod:`engine.evaluate.monitor`: the kNN accuracy measured at the end of training epochs.

Nothing here imports Qt; the app calls these from worker threads, the CLI from a process.
"""
