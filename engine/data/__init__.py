"""Stage 1, images to labelled, split, decoded tensors: image loading (``imageio``),
``scan``, ``labels``, ``splits`` (+ ``split_checks``), ``dataset`` (scan + labels + split in
one call), ``project`` (saved settings), ``cache`` / ``resize`` / ``transforms`` / ``stats``.
Imports only ``core``."""
