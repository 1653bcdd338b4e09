"""EfficientNetB0 with a pneumonia head.

The original project\'s `create_optimized_transfer_learning_model('EfficientNetB0')`.
"""

from ..hookspecs import hookimpl
from .transfer import transfer_architecture


@hookimpl
def register_architectures(register):
    register(
        transfer_architecture(
            name="efficientnet_b0",
            application="EfficientNetB0",
            preprocessing="raw",
            description="EfficientNetB0 backbone (rescales inside), ImageNet weights",
        )
    )
