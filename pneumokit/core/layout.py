"""The registry's folder layout: every file name of a model's folder and of a version folder, in
one place (docs/registry.md, "Layout").

    ROOT/<name>/aliases.json, .lock, .last_version
    ROOT/<name>/<version>/model.keras, metadata.json, model.onnx, model.int8.onnx, gate.npz,
        training_images.txt, golden/, model_card.md, model_card.json, history.csv, plots/
"""

# a model's folder
ALIASES_FILE = "aliases.json"
LOCK_FILE = ".lock"  # held while versions or aliases change
LAST_VERSION = ".last_version"  # high-water mark: numbers are never reused
TMP_PREFIX = ".tmp-"  # a version on its way in, a staging folder, a version on its way out

# a version folder
MODEL_FILE = "model.keras"
METADATA_FILE = "metadata.json"
ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
GATE_FILE = "gate.npz"  # the input gate's arrays (pneumokit.training.gate)
TRAINING_IMAGES = "training_images.txt"  # the sha256 of every training image
GOLDEN_FOLDER = "golden"  # the golden self-test vectors (pneumokit.registry.golden)
CARD_FILE = "model_card.md"
CARD_JSON = "model_card.json"
