"""The exported model on onnxruntime's CUDA provider against its CPU provider, on one machine.

Scores real X-rays with an exported ``model.onnx`` (``--model``; a registry
ref or a path) through ``pneumokit.inference.runtime.Predictor``, once with
``providers="cuda"`` (full float32, the default, and ``tf32=True``) and once
with ``providers="cpu"``: parity (max |CUDA - CPU| over the images), median
batch-1 latency, batch-64 throughput, and the providers each Predictor
reported. Without CUDA it says so and measures the CPU only.

Last line: JSON with ``cuda``, the figures, and ``throughput_ratio`` =
CUDA float32 images/s ÷ CPU images/s (null without CUDA).

    pip install 'pneumokit[gpu]'   # onnxruntime-gpu, never beside onnxruntime
    python bench/gpu_inference.py --model cnn_optimized --images ../shared/data/chest_xray/val
"""

import argparse
import json

import numpy as np
from timing import median_seconds  # bench/timing.py

from pneumokit.errors import PneumokitError
from pneumokit.inference.runtime import Predictor, expand_inputs


def measure(predictor: Predictor, x: np.ndarray, repeats: int) -> dict:
    batch = np.resize(x, (64, *x.shape[1:])).astype(np.float32)  # 64 images, repeated if fewer
    return {
        "providers": predictor.providers_in_use,
        "tf32": predictor.tf32,
        "latency_ms_b1": round(1000 * median_seconds(lambda: predictor.predict_batch(x[:1]), repeats), 3),
        "images_per_s_b64": round(64 / median_seconds(lambda: predictor.predict_batch(batch),
                                                     max(5, repeats // 4)), 1),
    }


def main() -> None:
    import onnxruntime as ort

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="registry ref or .onnx path of an exported model")
    parser.add_argument("--images", required=True, help="folder (or files) of X-rays")
    parser.add_argument("--limit", type=int, default=64, help="images to score (default 64)")
    parser.add_argument("--repeats", type=int, default=100)
    args = parser.parse_args()

    try:
        cpu = Predictor(args.model, providers="cpu")
        paths = [p for p in expand_inputs([args.images]) if p.is_file()][: args.limit]
        if not paths:
            raise SystemExit(f"error: no images in {args.images}")
        x = cpu.preprocessing.prepare(paths)
    except PneumokitError as exc:
        raise SystemExit(f"error: {exc}") from None
    out = {"model": str(cpu.path), "images": len(paths), "onnxruntime": ort.__version__,
           "cuda": "CUDAExecutionProvider" in ort.get_available_providers(),
           "cpu": measure(cpu, x, args.repeats), "throughput_ratio": None}
    p_cpu = cpu.predict_batch(x)
    if out["cuda"]:
        for key, tf32 in (("cuda_float32", False), ("cuda_tf32", True)):
            gpu = Predictor(args.model, providers="cuda", tf32=tf32)
            out[key] = {**measure(gpu, x, args.repeats),
                        "max_abs_diff_vs_cpu": float(np.max(np.abs(gpu.predict_batch(x) - p_cpu)))}
        out["throughput_ratio"] = round(out["cuda_float32"]["images_per_s_b64"]
                                        / out["cpu"]["images_per_s_b64"], 2)
        print(f"CUDA float32: parity {out['cuda_float32']['max_abs_diff_vs_cpu']:.2e}, "
              f"{out['cuda_float32']['images_per_s_b64']} images/s at batch 64 "
              f"({out['throughput_ratio']}x the CPU provider); TF32: parity "
              f"{out['cuda_tf32']['max_abs_diff_vs_cpu']:.2e}")
    else:
        print(f"no CUDAExecutionProvider in this onnxruntime ({', '.join(ort.get_available_providers())}): "
              "CPU figures only")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
