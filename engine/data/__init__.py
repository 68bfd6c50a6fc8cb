"""Image data: scanning a folder (:mod:`.scan`), the decoded cache (:mod:`.cache`), the
built-in demo dataset (:mod:`.demo`) and batches for training (:mod:`.loader`)."""
