"""Training: ``steps`` (the preparation and the finishing step ``train`` and ``cv`` share),
``pipeline`` and ``fused`` (tf.data batches, fused augmentation), ``device``, ``fitting``,
``calibration`` and ``metrics``, ``intervals`` (bootstrap CIs), ``gate`` (the input gate, fitted
with the model), ``plots``, ``train``, ``cv`` and ``compat`` (the original project's API)."""
