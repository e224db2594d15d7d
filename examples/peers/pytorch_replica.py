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
sentence each drawn once, BatchNorm in eval mode. Needs torch and torchvision (and scikit-learn
for `--check supervised`); never run in CI.

Variations (RESULTS.md, "Why the default learns so little"): --head-bn, --out-bn (batch norm
in the heads), --pool mean, --layers, --tau, --lr with --warmup, --text-lr (1e-9 freezes the
text side), --text-bow (a trainable bag of words as text encoder), --no-augment,
--zero-init-residual (torchvision's: each residual block starts as the identity), --batch with
--val-batch (validation keeps batches of 32 unless told), --size, --drop-sentences REGEX; and two
checks: `--check floor` (both sides bags of words, the image side reading the whole report:
the loss the task allows) and `--check supervised` (the ResNet-18 trained on the labels).
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
        if POOL == "mean":
            return (h * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
        return h.masked_fill(~mask.unsqueeze(-1), float("-inf")).max(1).values


HEAD_BN = False
OUT_BN = False
POOL = "max"
def head(d):
    if HEAD_BN:
        layers = [nn.Linear(d, d), nn.BatchNorm1d(d), nn.ReLU(), nn.Linear(d, 512)]
    else:
        layers = [nn.Linear(d, d), nn.ReLU(), nn.Linear(d, 512)]
    if OUT_BN:
        layers.append(nn.BatchNorm1d(512, affine=False))
    return nn.Sequential(*layers)


def convirt_loss(v, u, tau, lam):
    v, u = F.normalize(v, dim=1), F.normalize(u, dim=1)
    s = v @ u.T / tau
    y = torch.arange(len(v))
    return lam * F.cross_entropy(s, y) + (1 - lam) * F.cross_entropy(s.T, y)


def bag_of_words(vocab, texts):
    x = torch.zeros(len(texts), len(vocab.ids))
    for i, t in enumerate(texts):
        for w in words(t):
            x[i, vocab.ids[w]] = 1.0
    return x


def check_floor(items, val_items, vocab, a):
    """Both sides bags of words through an MLP, the image side reading its whole report."""
    def mlp():
        return nn.Sequential(nn.Linear(len(vocab.ids), 512), nn.ReLU(), nn.Linear(512, 512))
    image_side, text_side = mlp(), mlp()
    opt = torch.optim.Adam(list(image_side.parameters()) + list(text_side.parameters()), lr=1e-3)
    rng, draw = random.Random(a.seed), random.Random(a.seed + 1)
    vx = bag_of_words(vocab, [" ".join(it["sentences"]) for it in val_items])
    vu = bag_of_words(vocab, [draw.choice(it["sentences"]) for it in val_items])
    for step in range(1, a.steps + 1):
        b = rng.sample(range(len(items)), a.batch)
        x = bag_of_words(vocab, [" ".join(items[i]["sentences"]) for i in b])
        u = bag_of_words(vocab, [rng.choice(items[i]["sentences"]) for i in b])
        loss = convirt_loss(image_side(x), text_side(u), a.tau, a.lam)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % a.eval_every == 0:
            with torch.no_grad():
                val = [convirt_loss(image_side(vx[i : i + a.batch]), text_side(vu[i : i + a.batch]), a.tau, a.lam).item()
                       for i in range(0, len(val_items) - a.batch + 1, a.batch)]
            print(f"step {step}: train {loss.item():.4f}  val {sum(val) / len(val):.4f}", flush=True)


def check_supervised(pictures, items, val_pictures, val_items, a):
    """The image encoder alone, trained on the eight labels: can it see the findings?"""
    from sklearn.metrics import roc_auc_score

    net = torchvision.models.resnet18(num_classes=8)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    y = torch.tensor([it["labels"] for it in items], dtype=torch.float32)
    vy = torch.tensor([it["labels"] for it in val_items], dtype=torch.float32)
    rng = random.Random(a.seed)
    vx = to_input(val_pictures, a.size, False, rng)
    for step in range(1, a.steps + 1):
        b = rng.sample(range(len(items)), a.batch)
        loss = F.binary_cross_entropy_with_logits(net(to_input(pictures[b], a.size, False, rng)), y[b])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % a.eval_every == 0:
            net.eval()
            with torch.no_grad():
                p = net(vx).sigmoid().numpy()
            net.train()
            aucs = [roc_auc_score(vy[:, k].numpy(), p[:, k]) for k in range(8)]
            print(f"step {step}: AUC " + " ".join(f"{x:.2f}" for x in aucs) + f"  mean {np.mean(aucs):.3f}", flush=True)


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
    p.add_argument("--head-bn", action="store_true")
    p.add_argument("--out-bn", action="store_true")
    p.add_argument("--pool", default="max")
    p.add_argument("--text-bow", action="store_true")
    p.add_argument("--check", choices=["floor", "supervised"])
    p.add_argument("--warmup", type=int, default=0)
    p.add_argument("--text-lr", type=float, default=None)
    p.add_argument("--zero-init-residual", action="store_true")
    p.add_argument("--val-batch", type=int, default=32)
    p.add_argument("--drop-sentences", default=None, help="a regex: sentences it finds are never drawn (unless all of a report's are)")
    a = p.parse_args()
    global HEAD_BN, OUT_BN, POOL
    POOL = a.pool
    HEAD_BN, OUT_BN = a.head_bn, a.out_bn
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    rng = random.Random(a.seed)

    pictures, items = load(a.corpus, "train")
    val_pictures, val_items = load(a.corpus, "val")
    val_pictures, val_items = val_pictures[:128], val_items[:128]
    vocab = Vocabulary(items + val_items)
    if a.drop_sentences:
        pattern = re.compile(a.drop_sentences, re.I)
        for it in items + val_items:
            kept = [x for x in it["sentences"] if not pattern.search(x)]
            it["sentences"] = kept or it["sentences"]
    if a.check == "floor":
        return check_floor(items, val_items, vocab, a)
    if a.check == "supervised":
        return check_supervised(pictures, items, val_pictures, val_items, a)
    draw = random.Random(a.seed + 1)
    val_ids = vocab.encode([draw.choice(it["sentences"]) for it in val_items])
    val_input = to_input(val_pictures, a.size, False, rng)

    image = torchvision.models.resnet18(zero_init_residual=a.zero_init_residual)
    image.fc = nn.Identity()
    text = Bert(len(vocab.ids), a.width, a.layers)
    if a.text_bow:
        class Bow(nn.Module):
            def __init__(self, n, w):
                super().__init__(); self.n = n; self.lin = nn.Linear(n, w)
            def forward(self, ids):
                x = torch.zeros(ids.shape[0], self.n).scatter_(1, ids, 1.0); x[:, :3] = 0
                return self.lin(x)
        text = Bow(len(vocab.ids), a.width)
    image_head, text_head = head(512), head(a.width)
    modules = [image, text, image_head, text_head]
    params = [q for m in modules for q in m.parameters()]
    tp = list(text.parameters()) + list(text_head.parameters())
    ip = list(image.parameters()) + list(image_head.parameters())
    opt = torch.optim.Adam([{"params": ip, "lr": a.lr}, {"params": tp, "lr": a.text_lr or a.lr}], weight_decay=1e-6)
    base = [g["lr"] for g in opt.param_groups]

    vb = a.val_batch

    def validate():
        for m in modules:
            m.eval()
        with torch.no_grad():
            losses = [
                convirt_loss(image_head(image(val_input[i : i + vb])), text_head(text(val_ids[i : i + vb])), a.tau, a.lam).item()
                for i in range(0, len(val_items) - vb + 1, vb)
            ]
        for m in modules:
            m.train()
        return sum(losses) / len(losses)

    first = validate()
    print(f"step 0: val {first:.4f} (ln {vb} = {math.log(vb):.4f})", flush=True)
    order, recent, start = [], [], time.time()
    for step in range(1, a.steps + 1):
        if len(order) < a.batch:
            order = list(range(len(items)))
            rng.shuffle(order)
        batch = [order.pop() for _ in range(a.batch)]
        x = to_input(pictures[batch], a.size, not a.no_augment, rng)
        ids = vocab.encode([rng.choice(items[i]["sentences"]) for i in batch])
        loss = convirt_loss(image_head(image(x)), text_head(text(ids)), a.tau, a.lam)
        if a.warmup:
            for g, b in zip(opt.param_groups, base):
                g["lr"] = b * min(1.0, step / a.warmup)
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
