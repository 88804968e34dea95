"""Stage 0, imported by everything: errors, events and the cancel token, atomic writes,
user folders, bundled resources, and the torch device choice (``device``, the one module
here that imports torch). Nothing in ``core`` imports another Loupe package."""
