"""MobileNetV2 with a pneumonia head.

The original project\'s `create_optimized_transfer_learning_model('MobileNetV2')`.
"""

from ..hookspecs import hookimpl
from .transfer import transfer_architecture


@hookimpl
def register_architectures(register):
    register(
        transfer_architecture(
            name="mobilenet_v2",
            application="MobileNetV2",
            preprocessing="tf",
            description="MobileNetV2 backbone, ImageNet weights, inputs in [-1, 1]",
        )
    )
