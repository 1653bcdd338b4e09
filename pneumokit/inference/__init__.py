"""Inference: ``export`` (Keras to ONNX, parity) and ``quantize`` (INT8), ``runtime`` (the
``Predictor``), ``predict`` (rows, CSV, overlays, DICOM results: what `pneumokit predict` writes),
``verify`` (`registry verify`, `--run`), ``evaluate`` (site acceptance) and ``report``, ``adapt``,
``explain`` and ``overlay``, ``dicom_results`` (SR and SC) and ``serve`` (HTTP, with ``static``)."""
