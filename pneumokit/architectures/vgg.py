"""VGG16 with a pneumonia head.

The original project\'s `create_optimized_transfer_learning_model('VGG16')`.
"""

from ..hookspecs import hookimpl
from .transfer import transfer_architecture


@hookimpl
def register_architectures(register):
    register(
        transfer_architecture(
            name="vgg16",
            application="VGG16",
            preprocessing="caffe",
            description="VGG16 backbone, ImageNet weights, caffe mean subtraction",
        )
    )
