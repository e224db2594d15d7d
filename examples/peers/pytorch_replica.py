"""The default `train` run, rebuilt in PyTorch on the same corpus: does the model learn faster
there? (It does not: how slowly the default learns is the task's doing, not our kernels'.)

    cargo run --release --example export_corpus -- /tmp/corpus
    python3 examples/peers/pytorch_replica.py /tmp/corpus [--steps 160] [--lr 3e-4] ...

Same model and objective as the small config: torchvision ResNet-18 (random init) at 64 px,
a 2-layer post-norm BERT of width 256 (GELU, dropout 0.1, std-0.02 init) with a masked max-pool
over tokens, heads Linear-ReLU-Linear to 512, the ConVIRT loss (tau 0.1, lambda 0.75), Adam with
L2 weight decay 1e-6, batch 32, one report sentence drawn per pair. Differences: a word-level
vocabulary instead of our WordPiece one, and torchvision-style mild augmentation (crop 0.8-1,
rotation 5 degrees, translation 0.05, scale 0.95-1.05, brightness and contrast 0.8-1.2, no blur).
Validation as `train` does it: the first 128 validation items, whole pictures resized, one
sentence each drawn once, BatchNorm in eval mode. Needs torch and torchvision; never run in CI.
"""
import argparse
import json
import math
import random
import re
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def load(corpus, name):
    meta = json.load(open(f"{corpus}/{name}.json"))
    s = meta["size"]
    pictures = np.fromfile(f"{corpus}/{name}.f32", dtype=np.float32).reshape(-1, 1, s, s)
    return torch.from_numpy(pictures), meta["items"]


def words(sentence):
    return re.findall(r"[a-z]+|\d+|[^\sa-z\d]", sentence.lower())


class Vocabulary:
    def __init__(self, items):
        self.ids = {"[PAD]": 0, "[CLS]": 1, "[SEP]": 2}
        for item in items:
            for sentence in item["sentences"]:
                for w in words(sentence):
                    self.ids.setdefault(w, len(self.ids))

    def encode(self, sentences, max_len=48):
        ids = [[1] + [self.ids[w] for w in words(s)][: max_len - 2] + [2] for s in sentences]
        out = torch.zeros(len(ids), max(map(len, ids)), dtype=torch.long)
        for i, row in enumerate(ids):
            out[i, : len(row)] = torch.tensor(row)
        return out


def to_input(pictures, size, augment, rng):
    """Grey [B, 1, S, S] in [0, 1] -> normalised [B, 3, size, size], mildly augmented."""
    out = []
    for img in pictures.split(1):
        if augment:
            s0 = img.shape[-1]
            area = rng.uniform(0.8, 1.0)
            ratio = math.exp(rng.uniform(math.log(0.9), -math.log(0.9)))
            w = min(s0, int(round(s0 * math.sqrt(area * ratio))))
            h = min(s0, int(round(s0 * math.sqrt(area / ratio))))
            x, y = rng.randint(0, s0 - w), rng.randint(0, s0 - h)
            img = F.interpolate(img[:, :, y : y + h, x : x + w], size=(size, size), mode="bilinear", align_corners=False)
            angle = math.radians(rng.uniform(-5, 5))
            scale = rng.uniform(0.95, 1.05)
            tx, ty = rng.uniform(-0.05, 0.05), rng.uniform(-0.05, 0.05)
            theta = torch.tensor(
                [[[math.cos(angle) / scale, -math.sin(angle) / scale, 2 * tx],
                  [math.sin(angle) / scale, math.cos(angle) / scale, 2 * ty]]]
            )
            grid = F.affine_grid(theta, list(img.shape), align_corners=False)
            img = F.grid_sample(img, grid, align_corners=False)
            mean = img.mean()
            img = (img * rng.uniform(0.8, 1.2) - mean) * rng.uniform(0.8, 1.2) + mean
            img = img.clamp(0, 1)
        else:
            img = F.interpolate(img, size=(size, size), mode="bilinear", align_corners=False)
        out.append(img)
    return (torch.cat(out).repeat(1, 3, 1, 1) - MEAN) / STD


class Bert(nn.Module):
    def __init__(self, vocab, width, layers, heads=4, max_len=64):
        super().__init__()
        self.words = nn.Embedding(vocab, width)
        self.positions = nn.Embedding(max_len, width)
        self.types = nn.Embedding(2, width)
        self.norm = nn.LayerNorm(width, eps=1e-12)
        self.drop = nn.Dropout(0.1)
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, 0.1, activation="gelu", batch_first=True, layer_norm_eps=1e-12)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, ids):
        mask = ids > 0
        h = self.words(ids) + self.positions(torch.arange(ids.shape[1])) + self.types(torch.zeros_like(ids))
        h = self.encoder(self.drop(self.norm(h)), src_key_padding_mask=~mask)
        return h.masked_fill(~mask.unsqueeze(-1), float("-inf")).max(1).values


def head(d):
    return nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, 512))


def convirt_loss(v, u, tau, lam):
    v, u = F.normalize(v, dim=1), F.normalize(u, dim=1)
    s = v @ u.T / tau
    y = torch.arange(len(v))
    return lam * F.cross_entropy(s, y) + (1 - lam) * F.cross_entropy(s.T, y)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("corpus", help="a directory written by `--example export_corpus`")
    p.add_argument("--steps", type=int, default=160)
    p.add_argument("--eval-every", type=int, default=20)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--tau", type=float, default=0.1)
    p.add_argument("--lam", type=float, default=0.75)
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    rng = random.Random(a.seed)

    pictures, items = load(a.corpus, "train")
    val_pictures, val_items = load(a.corpus, "val")
    val_pictures, val_items = val_pictures[:128], val_items[:128]
    vocab = Vocabulary(items + val_items)
    draw = random.Random(a.seed + 1)
    val_ids = vocab.encode([draw.choice(it["sentences"]) for it in val_items])
    val_input = to_input(val_pictures, a.size, False, rng)

    image = torchvision.models.resnet18()
    image.fc = nn.Identity()
    text = Bert(len(vocab.ids), a.width, a.layers)
    image_head, text_head = head(512), head(a.width)
    modules = [image, text, image_head, text_head]
    params = [q for m in modules for q in m.parameters()]
    opt = torch.optim.Adam(params, lr=a.lr, weight_decay=1e-6)

    def validate():
        for m in modules:
            m.eval()
        with torch.no_grad():
            losses = [
                convirt_loss(image_head(image(val_input[i : i + a.batch])), text_head(text(val_ids[i : i + a.batch])), a.tau, a.lam).item()
                for i in range(0, len(val_items) - a.batch + 1, a.batch)
            ]
        for m in modules:
            m.train()
        return sum(losses) / len(losses)

    first = validate()
    print(f"step 0: val {first:.4f} (ln {a.batch} = {math.log(a.batch):.4f})", flush=True)
    order, recent, start = [], [], time.time()
    for step in range(1, a.steps + 1):
        if len(order) < a.batch:
            order = list(range(len(items)))
            rng.shuffle(order)
        batch = [order.pop() for _ in range(a.batch)]
        x = to_input(pictures[batch], a.size, not a.no_augment, rng)
        ids = vocab.encode([rng.choice(items[i]["sentences"]) for i in batch])
        loss = convirt_loss(image_head(image(x)), text_head(text(ids)), a.tau, a.lam)
        opt.zero_grad()
        loss.backward()
        opt.step()
        recent.append(loss.item())
        if step % a.eval_every == 0 or step == a.steps:
            val = validate()
            train = sum(recent) / len(recent)
            recent = []
            print(f"step {step}: train {train:.4f}  val {val:.4f} ({100 * val / first:.0f}%)  {time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
