"""The offline wing: making and evaluating probes (collection, labelling, training, export,
calibration and its risk maths, corpora and grading, the paired bench evaluation).

Serving never imports it; it reaches the model only through the runtime's engine and its
replay door (``runtime.replay``). ``lynx-edge probe …`` and ``lynx-edge bench`` drive it.
"""
