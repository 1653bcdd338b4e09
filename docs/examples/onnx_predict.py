"""Score chest X-rays with a pneumokit ONNX file, using only onnxruntime, NumPy and Pillow.

    python onnx_predict.py model.onnx image.jpeg [image2.png ...]

Everything needed is read from the file's metadata_props (pneumokit.*). Prints
path,probability,label,gate_score per image, and, for a file exported with
--heatmap, the image's heatmap as a fifth column (JSON rows; docs/explain.md).
An image whose gate score is over the gate's threshold is not a chest X-ray
like those the model was trained on: it gets OUT_OF_SCOPE and no probability
(docs/gate.md).
"""

import json
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps


def load(path, pre):
    """Decode, grayscale, resize and normalise one image as pneumokit.preprocessing does."""
    height, width = pre["height"], pre["width"]
    with Image.open(path) as img:
        if pre.get("jpeg_draft") and img.format == "JPEG":
            img.draft("L", (width, height))  # libjpeg decodes at a reduced DCT scale
        ImageOps.exif_transpose(img, in_place=True)
        if img.mode.startswith("I;16") or img.mode == "I":  # 16-bit: scale, do not clip
            wide = np.asarray(img, dtype=np.float64) * (255.0 / 65535.0)
            img = Image.fromarray(np.clip(np.rint(wide), 0, 255).astype(np.uint8))
        elif img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            img = img.convert("RGBA").convert("RGB")  # drop alpha
        img = img.convert("L")
        if img.size != (width, height):
            img = img.resize((width, height), Image.Resampling.BILINEAR)
        pixels = np.asarray(img, dtype=np.float32)[:, :, None]  # (H, W, 1)
    mean = np.asarray(pre["mean"], dtype=np.float32)  # one value per model channel
    std = np.asarray(pre["std"], dtype=np.float32)
    return (pixels * np.float32(pre["scale"]) - mean) / std  # broadcasts gray to C channels


def main(model_path, image_paths):
    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    pre = json.loads(meta["pneumokit.preprocessing"])
    input_name = json.loads(meta["pneumokit.input"])["name"]
    classes = json.loads(meta["pneumokit.class_names"])
    threshold = float(meta["pneumokit.threshold"])
    gate = json.loads(meta.get("pneumokit.gate", "null"))  # None: exported without the input gate
    outputs = [o["name"] for o in json.loads(meta.get("pneumokit.outputs", "[]"))] or [
        json.loads(meta["pneumokit.output"])["name"]]
    batch = np.stack([load(p, pre) for p in image_paths])
    results = dict(zip(outputs, session.run(outputs, {input_name: batch}), strict=True))
    for i, path in enumerate(image_paths):
        p = results[outputs[0]][i, 0]
        score = results[gate["output"]][i] if gate else float("nan")
        if gate and not score <= gate["threshold"]:  # NaN too: never a label for it
            row = f"{path},,OUT_OF_SCOPE,{score:.6g}"
        else:
            row = f"{path},{p:.6f},{classes[int(p >= threshold)]},{score:.6g}"
        if "heatmap" in results:  # the heatmap, quoted: its JSON holds commas
            row += f',"{json.dumps(np.round(results["heatmap"][i].astype(float), 4).tolist())}"'
        print(row)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
