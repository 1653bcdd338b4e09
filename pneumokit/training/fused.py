"""The pipeline's fast path: built-in augmentations fused into one pass per image with OpenCV.

A list of ``GeometricAugmentation`` and ``PointwiseAugmentation`` layers (all
the built-ins) is applied as

1. one bilinear resampling per image (``cv2.warpAffine``) through the product
   of the geometric layers' matrices, in list order; then
2. the ``ImageAugmentation`` layers (blur, sharpen, noise, jpeg), in list
   order, each on the uint8 image (``apply_image``); then
3. one 256-entry lookup table per image (``cv2.LUT``) holding the pointwise
   layers in list order, the clipping, the cast to float32 and the
   architecture's normalisation (``Preprocessing.normalize``), and the
   repetition of the gray channel into the model's channels.

The random draws are the layers' own (``inverse_maps`` / ``sample``), made
with TensorFlow's stateless ops from the same per-layer seeds as the layer
by layer path, so a seed means the same augmentation on both paths. The
pixels differ a little: geometric layers resample once instead of once each
(less blur, and reflected borders come from the original image), OpenCV
interpolates in fixed point (1/32 pixel) and the warped pixels are rounded to
uint8 before the table, as a decoded image is. Lists must keep the order
geometric, image, pointwise; any other order, or any other layer, is not
fused (``supports``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..data.preprocessing import Preprocessing


def layer_seeds(batch_seed, count: int):
    """Independent stateless seeds, one per layer, split from the batch's seed."""
    import tensorflow as tf

    return tf.random.experimental.stateless_split(batch_seed, count)


class FusedAugmentation:
    """Apply built-in augmentation layers (and the normalisation) to uint8 images on the host."""

    def __init__(self, layers: Sequence, preprocessing: Preprocessing):
        if not self.supports(layers):
            raise TypeError("FusedAugmentation takes GeometricAugmentation, then ImageAugmentation, "
                            "then PointwiseAugmentation layers that keep the base classes' call and augment")
        from ..models.augmentations.layers import (
            GeometricAugmentation,
            ImageAugmentation,
            PointwiseAugmentation,
        )

        self.layers = list(layers)
        self._is_pointwise = [isinstance(la, PointwiseAugmentation) for la in self.layers]
        self._is_image = [isinstance(la, ImageAugmentation) for la in self.layers]
        self.pointwise = [la for la, p in zip(self.layers, self._is_pointwise, strict=True) if p]
        self.image_ops = [la for la, p in zip(self.layers, self._is_image, strict=True) if p]
        self.warps = any(isinstance(la, GeometricAugmentation) for la in self.layers)
        self.uses_mean = any(la.uses_mean for la in self.pointwise)
        self.pre = preprocessing
        self._values = np.arange(256, dtype=np.float32)
        self._plain_table = self._normalised(self._values)

    @staticmethod
    def supports(layers: Sequence) -> bool:
        """Whether the list can be fused without changing what it means (imports TensorFlow).

        Every layer must be a built-in kind that keeps the base class's
        ``call`` and ``augment`` (a subclass that overrides them does its own
        thing), and the kinds must come in the order geometric, image,
        pointwise: fusing applies them in that order, and e.g. ``contrast,crop``
        takes contrast's mean over the whole image, ``crop,contrast`` over the crop.
        """
        from ..models.augmentations.layers import (
            GeometricAugmentation,
            ImageAugmentation,
            PointwiseAugmentation,
            SeededAugmentation,
        )

        kinds = (GeometricAugmentation, ImageAugmentation, PointwiseAugmentation)
        rank = 0
        for layer in layers:
            kind = next((k for k in kinds if isinstance(layer, k)), None)
            if (kind is None or type(layer).augment is not kind.augment
                    or type(layer).call is not SeededAugmentation.call):
                return False
            if kinds.index(kind) < rank:
                return False
            rank = kinds.index(kind)
        return True

    def draw(self, batch, height, width, batch_seed):
        """One batch's random draws as tensors: maps (B, 2, 3), pointwise parameters (B, P)
        and the image layers' parameters side by side (B, Q)."""
        import tensorflow as tf

        maps = tf.eye(3, batch_shape=tf.reshape(batch, [1]))
        params, image_params = [], [tf.zeros(tf.stack([batch, 0]))]
        if self.layers:
            seeds = layer_seeds(batch_seed, len(self.layers))
            for k, layer in enumerate(self.layers):
                if self._is_pointwise[k]:
                    params.append(layer.sample(batch, seeds[k]))
                elif self._is_image[k]:
                    image_params.append(layer.sample(batch, seeds[k]))
                else:
                    maps = tf.matmul(maps, layer.inverse_maps(batch, height, width, seeds[k]))
        params = tf.stack(params, axis=1) if params else tf.zeros(tf.stack([batch, 0]))
        image_params = tf.concat(image_params, axis=1)
        with tf.control_dependencies([tf.debugging.assert_equal(
                maps[:, 2, :], tf.constant([0.0, 0.0, 1.0]),
                message="geometric augmentations must be affine (bottom row 0, 0, 1)")]):
            return tf.identity(maps[:, :2, :]), params, image_params

    def apply(self, images: np.ndarray, index, maps: np.ndarray, params: np.ndarray,
              image_params: np.ndarray | None = None) -> np.ndarray:
        """float32 (B, H, W, C) model input from ``images[index]`` (uint8, (N, H, W, 1)).

        ``maps``, ``params`` and ``image_params`` are one batch's draws (``draw``).
        """
        import cv2

        batch, (height, width), channels = len(index), images.shape[1:3], self.pre.channels
        if self.warps:
            pixels = np.empty((batch, height, width), dtype=np.uint8)
            for k, i in enumerate(index):
                cv2.warpAffine(images[i, :, :, 0], maps[k], (width, height), dst=pixels[k],
                               flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_REFLECT)
        else:
            pixels = images[index, :, :, 0]  # fancy indexing: a copy
        column = 0
        for layer in self.image_ops:
            cols = slice(column, column + layer.n_params)
            for k in range(batch):
                assert image_params is not None  # drawn whenever there are image layers
                pixels[k] = layer.apply_image(pixels[k], image_params[k, cols])
            column += layer.n_params
        if self.pointwise:
            tables = self._tables(pixels, params)
        else:
            tables = np.broadcast_to(self._plain_table, (batch, 256, channels))
        out = np.empty((batch, height, width, channels), dtype=np.float32)
        for k in range(batch):
            src = pixels[k] if channels == 1 else cv2.merge([pixels[k]] * channels)
            cv2.LUT(src, tables[k].reshape(1, 256, channels), dst=out[k].reshape(height, width, channels))
        return out

    def _tables(self, pixels: np.ndarray, params: np.ndarray) -> np.ndarray:
        """(B, 256, C): the pointwise layers, in order, as tables over the gray levels, normalised."""
        values = np.broadcast_to(self._values, (len(pixels), 256))
        hist = None
        if self.uses_mean:
            import cv2

            hist = np.stack([cv2.calcHist([p], [0], None, [256], [0, 256])[:, 0] for p in pixels])
        for j, layer in enumerate(self.pointwise):
            mean = None
            if layer.uses_mean:  # the mean of the image as it stands, from its histogram
                assert hist is not None  # self.uses_mean is any layer's uses_mean
                mean = (np.einsum("bv,bv->b", hist, values, dtype=np.float64) / pixels[0].size)
                mean = mean.astype(np.float32)[:, None]
            values = layer.apply(values, params[:, j:j + 1].astype(np.float32), mean, np)
            values = values.astype(np.float32, copy=False)
        return self._normalised(values)

    def _normalised(self, values: np.ndarray) -> np.ndarray:
        """(..., 256, C) float32: each gray level's model input value per channel."""
        table = self.pre.normalize(values[..., None])
        shape = (*values.shape, self.pre.channels)
        return np.ascontiguousarray(np.broadcast_to(table, shape), dtype=np.float32)
