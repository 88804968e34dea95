"""Stage 4, what a model gets right and wrong on labelled data: ``analysis`` (confusion,
top losses, per class, image rows), ``embedding`` (2-D map), ``analysis_plots`` (figures
and the report folder). Imports everything below it (metrics from ``training``, maps
from ``inference``)."""
