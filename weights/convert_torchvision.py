#!/usr/bin/env python3
"""Convert a torchvision ResNet checkpoint to safetensors, keeping torchvision's tensor names.

Usage:
    # a state dict saved with torch.save, e.g. what torchvision downloads into
    # ~/.cache/torch/hub/checkpoints/ (resnet50-0676ba61.pth = IMAGENET1K_V1,
    # resnet50-11ad3fa6.pth = IMAGENET1K_V2):
    python3 weights/convert_torchvision.py resnet50-0676ba61.pth weights/resnet50-v1.safetensors

    # or let torchvision build the model and fetch its weights (needs torchvision and network):
    python3 weights/convert_torchvision.py --torchvision resnet50:IMAGENET1K_V1 weights/resnet50-v1.safetensors

The names stay as they are (conv1.weight, bn1.running_mean, layer1.0.conv1.weight, ...,
fc.weight, fc.bias), so convirt's ResNet loads the result directly
(`--weights weights/resnet50-v1.safetensors`). `num_batches_tracked` counters are dropped (convirt
does not use them); every other tensor is written as contiguous float32. A checkpoint that wraps
its weights ({"state_dict": ...} or {"model": ...}) or prefixes them with "module."
(DataParallel) is unwrapped. When the layout is recognised as resnet18, resnet34 or resnet50 the
file's metadata records it as "arch", which convirt's examples use as their default --arch.

Needs torch and safetensors (torchvision only for --torchvision). Never run in CI: it exists for
users who bring their own weights; see weights/README.md.
"""

import argparse
import os
import re
import sys

import torch


def load_checkpoint(path):
    """The state dict in a torch.save file, unwrapped."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure is the file's, reported with its name
        sys.exit(f"error: {path}: cannot load it with torch.load: {e}")
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj:
        sys.exit(f"error: {path}: not a state dict (a mapping of tensor names to tensors)")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def from_torchvision(spec):
    """`arch:WEIGHTS`, e.g. resnet50:IMAGENET1K_V1, built by torchvision."""
    import torchvision

    arch, _, weights = spec.partition(":")
    builder = getattr(torchvision.models, arch, None)
    if builder is None:
        sys.exit(f"error: torchvision has no model '{arch}'")
    return builder(weights=weights or None).state_dict()


def convert(state_dict):
    """float32, contiguous, owning its memory (safetensors refuses shared storage); no counters."""
    out = {}
    for name, t in state_dict.items():
        if name.endswith("num_batches_tracked"):
            continue
        if not torch.is_tensor(t):
            sys.exit(f"error: '{name}' is a {type(t).__name__}, not a tensor")
        if not t.is_floating_point():
            sys.exit(f"error: '{name}' has dtype {t.dtype}; only floating-point tensors convert")
        out[name] = t.detach().to(dtype=torch.float32, device="cpu").contiguous().clone()
    return out


def guess_arch(tensors):
    """resnet18 / resnet34 / resnet50 from the blocks per stage, or None."""
    blocks = []
    for stage in range(1, 5):
        ids = {int(m.group(1)) for k in tensors if (m := re.match(rf"layer{stage}\.(\d+)\.", k))}
        blocks.append(len(ids))
    bottleneck = "layer1.0.conv3.weight" in tensors
    return {
        ((2, 2, 2, 2), False): "resnet18",
        ((3, 4, 6, 3), False): "resnet34",
        ((3, 4, 6, 3), True): "resnet50",
    }.get((tuple(blocks), bottleneck))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", nargs="?", help="a .pth state dict saved with torch.save")
    p.add_argument("--torchvision", metavar="ARCH:WEIGHTS", help="build torchvision.models.ARCH(weights=WEIGHTS) instead")
    p.add_argument("output", help="the .safetensors file to write")
    args = p.parse_args()
    if (args.checkpoint is None) == (args.torchvision is None):
        p.error("give either a checkpoint file or --torchvision ARCH:WEIGHTS")

    from safetensors.torch import save_file

    source = args.checkpoint or args.torchvision
    state = load_checkpoint(args.checkpoint) if args.checkpoint else from_torchvision(args.torchvision)
    tensors = convert(state)
    for needed in ("conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight"):
        if needed not in tensors:
            print(f"warning: no '{needed}': is this a torchvision ResNet state dict?", file=sys.stderr)
    metadata = {"format": "pt", "source": os.path.basename(source)}
    arch = guess_arch(tensors)
    if arch:
        metadata["arch"] = arch
    tmp = args.output + ".tmp"
    save_file(tensors, tmp, metadata=metadata)
    os.replace(tmp, args.output)
    params = sum(t.numel() for t in tensors.values())
    fc = tuple(tensors["fc.weight"].shape) if "fc.weight" in tensors else None
    print(f"wrote {args.output}: {len(tensors)} tensors, {params} values, arch {arch or 'not recognised'}, fc.weight {fc}")


if __name__ == "__main__":
    main()
