"""Stage 2, networks and their weights, as one one-way chain (timm's style):
``architectures`` (what can be built, its preprocessing) <- ``anatomy`` (head, body, layer
groups, activation-map layer) <- ``factory`` (create_model) <- weight layouts
(``layout_tools`` <- ``weight_layouts_tv`` <- ``weight_layouts``) and ``weight_packages``
<- ``weights`` (find, load, import) <- ``weights_download`` and ``catalog`` (architectures
with their weights status); ``bundle`` (the model file) uses ``factory``.
Imports ``core`` and ``data``."""
