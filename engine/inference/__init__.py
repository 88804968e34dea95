"""Stage 3, using a trained model: ``predict`` (Predictor), ``cam`` + ``activations``
(activation maps, filters, top-activating images), ``folder`` (a folder to CSV),
``export`` (ONNX), ``imagenet`` (the pretrained ImageNet predictor).
Imports ``core``, ``data`` and ``models``; independent of ``training``."""
