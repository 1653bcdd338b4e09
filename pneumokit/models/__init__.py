"""Models: the built-in plugins (``architectures``, ``augmentations``, ``recipes``), the Keras
pieces every model shares (``ensemble``: the calibrated head and the mean of networks;
``heatmap``: the CAM output), and ``scaffold`` with the ``templates`` of `pneumokit plugin new`."""
