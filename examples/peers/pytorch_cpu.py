"""PyTorch on the CPU doing the same work as `cargo run --release --example bench`, for the
peer columns of BENCHMARKS.md. Run it on the same machine, right after the bench, with as
many threads as the machine has cores (2 on ours):

    python3 examples/peers/pytorch_cpu.py [gemm|resnet|bert|infonce|convirt|all] [--threads N]

Needs torch (torchvision for `resnet` and `convirt`, transformers for `bert` and `convirt`); never run in CI. Prints one line per case:
kernel, shape, median ms, GFLOP/s (or images/s).
"""
import argparse
import statistics
import time

import torch


def median_ms(fn, reps, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def gemm():
    for m, n, k in [(256, 256, 256), (512, 512, 512), (1024, 1024, 1024), (1000, 1000, 1000), (7, 513, 129)]:
        sets = [(torch.rand(m, k), torch.rand(k, n)) for _ in range(3)]
        i = iter(range(1 << 30))
        ms = median_ms(lambda: torch.mm(*sets[next(i) % 3]), reps=10)
        print(f"gemm      {m}x{n}x{k:<8} {ms:10.3f} ms {2 * m * n * k / ms / 1e6:9.1f} GFLOP/s")


def conv_cases():
    # (name, N, C, H, O, K, stride, padding): the ResNet-50 shapes the Rust bench times.
    return [
        ("stem 7x7/2", 8, 3, 224, 64, 7, 2, 3),
        ("stage1 3x3", 8, 64, 56, 64, 3, 1, 1),
        ("stage2 3x3", 8, 128, 28, 128, 3, 1, 1),
        ("stage3 3x3", 8, 256, 14, 256, 3, 1, 1),
        ("stage4 3x3", 8, 512, 7, 512, 3, 1, 1),
        ("stage1 1x1", 8, 256, 56, 64, 1, 1, 0),
    ]


def resnet():
    import torchvision

    for name, n, c, h, o, k, s, p in conv_cases():
        x = torch.rand(n, c, h, h, requires_grad=True)
        conv = torch.nn.Conv2d(c, o, k, s, p, bias=False)
        oh = (h + 2 * p - k) // s + 1
        flops = 2 * n * o * oh * oh * c * k * k
        with torch.no_grad():
            fwd = median_ms(lambda: conv(x), reps=5)
        def step():
            conv(x).sum().backward()
        both = median_ms(step, reps=5)
        print(f"conv fwd      {name:<12} {fwd:10.3f} ms {flops / fwd / 1e6:9.1f} GFLOP/s")
        print(f"conv fwd+bwd  {name:<12} {both:10.3f} ms {3 * flops / both / 1e6:9.1f} GFLOP/s")
    model = torchvision.models.resnet50().train()
    x = torch.rand(8, 3, 224, 224)
    w = torch.rand(8, 1000)
    def train_step():
        model.zero_grad(set_to_none=True)
        (model(x) * w).sum().backward()
    ms = median_ms(train_step, reps=3, warmup=1)
    print(f"resnet50 train step batch 8 224px {ms:10.1f} ms {8 / ms * 1e3:9.2f} images/s")


def infonce():
    import torch.nn.functional as F

    def loss_fn(v, u, tau=0.1, lam=0.75):
        s = F.normalize(v, dim=1) @ F.normalize(u, dim=1).T / tau
        target = torch.arange(v.shape[0])
        return lam * F.cross_entropy(s, target) + (1 - lam) * F.cross_entropy(s.T, target)

    for n in (32, 256):
        d = 512
        sets = [(torch.randn(n, d, requires_grad=True), torch.randn(n, d, requires_grad=True)) for _ in range(3)]
        i = iter(range(1 << 30))

        def step():
            v, u = sets[next(i) % 3]
            loss_fn(v, u).backward()

        ms = median_ms(step, reps=20)
        print(f"infonce f+b   {n}x{d:<10} {ms:10.3f} ms {6 * n * n * d / ms / 1e6:9.1f} GFLOP/s")


class BertBase:
    """Hugging Face's BertModel at BERT-base size (random weights from its default config, no
    download), in training mode (dropout on), with the embeddings and the first 6 layers frozen,
    as both the `bert` and the `convirt` steps use it."""

    def __init__(self):
        from transformers import BertConfig, BertModel

        self.model = BertModel(BertConfig(vocab_size=28996), add_pooling_layer=False).train()
        for m in [self.model.embeddings, *self.model.encoder.layer[:6]]:
            m.requires_grad_(False)

    def trainable(self):
        return [p for p in self.model.parameters() if p.requires_grad]

    def __call__(self, ids):
        return self.model(input_ids=ids).last_hidden_state


def bert():
    """`bench -- bert`'s step: BERT-base in training mode (dropout on) with the embeddings and
    6 layers frozen, a weighted sum of the last hidden state, backward; batch 32."""
    for tokens in (32, 128):
        model = BertBase()
        ids = torch.randint(0, 28996, (32, tokens))
        w = torch.rand(32, tokens, 768)

        def step():
            for p in model.trainable():
                p.grad = None
            (model(ids) * w).sum().backward()

        ms = median_ms(step, reps=3, warmup=1)
        print(f"bert-base train step (6 frozen layers) batch 32 {tokens} tokens {ms / 1e3:8.2f} s")


def convirt_step(tokens):
    """The paper configuration's training step: ResNet-50 at 224 px and BertBase, max-pool
    over tokens, the two projection heads, the loss,
    backward and Adam, at batch 32 with `tokens` tokens per sentence."""
    import torch.nn as nn
    import torch.nn.functional as F
    import torchvision

    n, hidden = 32, 768
    image = torchvision.models.resnet50()
    image.fc = nn.Identity()
    text = BertBase()

    def head(d):
        return nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, 512))
    image_head, text_head = head(2048), head(hidden)
    params = [p for m in [image, image_head, text_head] for p in m.parameters()] + text.trainable()
    opt = torch.optim.Adam(params, lr=1e-4, weight_decay=1e-6)
    x = torch.rand(n, 3, 224, 224)
    ids = torch.randint(0, 28996, (n, tokens))

    def loss_fn(v, u, tau=0.1, lam=0.75):
        s = F.normalize(v, dim=1) @ F.normalize(u, dim=1).T / tau
        t = torch.arange(n)
        return lam * F.cross_entropy(s, t) + (1 - lam) * F.cross_entropy(s.T, t)

    def step():
        opt.zero_grad(set_to_none=True)
        u = text_head(text(ids).max(dim=1).values)
        v = image_head(image(x))
        loss_fn(v, u).backward()
        opt.step()

    ms = median_ms(step, reps=3, warmup=1)
    print(f"convirt paper step batch 32 224px {tokens} tokens {ms / 1e3:8.2f} s {n / ms * 1e3:9.2f} images/s")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("group", nargs="?", default="all", choices=["gemm", "resnet", "bert", "infonce", "convirt", "all"])
    ap.add_argument("--tokens", type=int, default=32, help="sentence length of the convirt step")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if a.group in ("gemm", "all"):
        gemm()
    if a.group in ("resnet", "all"):
        resnet()
    if a.group in ("bert", "all"):
        bert()
    if a.group in ("infonce", "all"):
        infonce()
    if a.group in ("convirt", "all"):
        convirt_step(a.tokens)


if __name__ == "__main__":
    main()
