"""PyTorch's throughput on the nets `pdl bench --model cnn|resnet|vit|gpt|lstm|all` times, for the ratio.

The same network, batches and optimiser as `training/src/bench.rs`: seeded noise images (28x28,
one channel), training steps of batch 64 with AdamW (lr 1e-3, no weight decay), and inference in
batches of 1000 without gradients; two untimed warm-up steps, then at least 3 steps and at least
`--seconds`, the figure being the median step. Beside it, the memory the model's timing took:
the peak resident set while it ran over the resident set it started from (Linux: the high-water
mark is reset before each model). The networks, written as the course's are (`models/src/`):

- `cnn`: pytorch/examples `mnist/main.py` (conv32-conv64-maxpool-fc128, dropout 0.25 and 0.5),
  `mnist-cnn`'s net (`cnn.rs`).
- `resnet`: `fashion-resnet`'s (`resnet.rs`): a conv3x3-BN-ReLU stem of 16 channels, one basic
  block per stage of 16, 32 and 64 channels, each halving the side (28 -> 14 -> 7 -> 4) with a
  strided 1x1 conv + BN shortcut, global average pooling, a linear head; convolutions without bias.
- `vit`: `mnist-vit`'s (`transformer/vit.rs`): 7x7 patches by a strided conv, a class token,
  learned positions, dropout 0.1, six pre-norm blocks of width 64 (4 heads, MLP 128 with exact
  GELU, dropout 0.1 on the attention weights and after attention and MLP), a final layer norm on
  the class token, a linear head.
- `gpt`: `shakespeare-gpt`'s (`transformer/gpt.rs`), written as nanoGPT writes it: 65 characters,
  token and learned position embeddings (N(0, 0.02)), four causal pre-norm blocks of width 128
  (4 heads by `scaled_dot_product_attention(is_causal=True)`, MLP 512 with QuickGELU, no
  dropout), a final layer norm, logits against the token embedding (tied). Windows of 64
  characters, batch 64; AdamW (lr 3e-3, decay 0.1) after clipping the gradients to norm 1.
- `lstm`: `shakespeare-lstm`'s (`rnn/language.rs`): a 64-wide embedding of the 65 characters, one
  LSTM layer of 512 (PyTorch's own `nn.LSTM`, as a PyTorch user writes it), a linear head.
  Windows of 128 characters, batch 64; AdamW (lr 2e-3, no decay) after clipping to norm 5.

The character models' inputs and targets are uniform random characters; their loss is the
cross-entropy at every position, and their inference figure is the forward pass and loss of the
same batch shape without gradients, in windows/s.

    python3 training/reference/pytorch_bench.py --model resnet --threads 2
    cargo xtask bench --model resnet --reference-train <train img/s> --reference-infer <infer img/s>

    python3 training/reference/pytorch_bench.py --model all --json torch.json
    cargo xtask bench --model all --reference torch.json

On an NVIDIA GPU, `--device cuda` runs the same steps there (`.ci/gpu` does, for the GPU rows of
`pdl bench --backend cuda`); every timed step ends by reading a number back (`loss.item()`, the
logits to the host), so the GPU's queue is drained inside the timing. The memory is then the peak
the CUDA allocator held.

Needs only `torch`; no dataset, no network. The tests never run it.
"""

import argparse
import ctypes
import gc
import json
import re
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn


class Cnn(nn.Module):
    """pytorch/examples mnist/main.py `Net`."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = self.dropout1(F.max_pool2d(x, 2))
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        return self.fc2(self.dropout2(x))


def conv3x3(c_in, c_out, stride):
    return nn.Conv2d(c_in, c_out, 3, stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1, self.norm1 = conv3x3(c_in, c_out, stride), nn.BatchNorm2d(c_out)
        self.conv2, self.norm2 = conv3x3(c_out, c_out, 1), nn.BatchNorm2d(c_out)
        self.shortcut = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x):
        y = F.relu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return F.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class ResNet(nn.Module):
    def __init__(self, channels=(16, 32, 64)):
        super().__init__()
        self.stem, self.stem_norm = conv3x3(1, channels[0], 1), nn.BatchNorm2d(channels[0])
        blocks, c_in = [], channels[0]
        for c_out in channels:
            blocks.append(BasicBlock(c_in, c_out, 2))
            c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(c_in, 10)

    def forward(self, x):
        x = self.blocks(F.relu(self.stem_norm(self.stem(x))))
        return self.head(x.mean(dim=(2, 3)))


class Block(nn.Module):
    """Pre-norm: x + drop(attention(LN(x))), then x + drop(W2 GELU(W1 LN(x)))."""

    def __init__(self, d_model=64, n_heads=4, d_ff=128, dropout=0.1):
        super().__init__()
        self.norm_attention = nn.LayerNorm(d_model)
        self.attention = nn.MultiheadAttention(d_model, n_heads, dropout, batch_first=True)
        self.norm_mlp = nn.LayerNorm(d_model)
        self.mlp_in, self.mlp_out = nn.Linear(d_model, d_ff), nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        h = self.norm_attention(x)
        x = x + self.dropout(self.attention(h, h, h, need_weights=False)[0])
        h = self.mlp_out(F.gelu(self.mlp_in(self.norm_mlp(x))))
        return x + self.dropout(h)


class Vit(nn.Module):
    def __init__(self, patch=7, d_model=64, n_layers=6, dropout=0.1):
        super().__init__()
        self.patches = nn.Conv2d(1, d_model, patch, patch)
        self.class_token = nn.Parameter(torch.zeros(1, 1, d_model))
        self.positions = nn.Parameter(torch.randn(1, (28 // patch) ** 2 + 1, d_model) * 0.02)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.Sequential(*[Block() for _ in range(n_layers)])
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, 10)

    def forward(self, images):
        x = self.patches(images).flatten(2).transpose(1, 2)  # [batch, patches, d_model]
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], 1) + self.positions
        x = self.blocks(self.dropout(x))
        return self.head(self.norm(x)[:, 0])


class GptBlock(nn.Module):
    """Pre-norm, causal: x + attention(LN(x)), then x + W2 QuickGELU(W1 LN(x))."""

    def __init__(self, d_model=128, n_heads=4, d_ff=512):
        super().__init__()
        self.n_heads = n_heads
        self.norm_attention = nn.LayerNorm(d_model)
        self.qkv, self.out = nn.Linear(d_model, 3 * d_model), nn.Linear(d_model, d_model)
        self.norm_mlp = nn.LayerNorm(d_model)
        self.mlp_in, self.mlp_out = nn.Linear(d_model, d_ff), nn.Linear(d_ff, d_model)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm_attention(x)).split(d, dim=2)
        heads = lambda y: y.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2)
        y = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), is_causal=True)
        x = x + self.out(y.transpose(1, 2).reshape(b, t, d))
        h = self.mlp_in(self.norm_mlp(x))
        return x + self.mlp_out(h * torch.sigmoid(1.702 * h))


class Gpt(nn.Module):
    def __init__(self, vocab=65, block=64, d_model=128, n_layers=4):
        super().__init__()
        self.embedding = nn.Embedding(vocab, d_model)
        self.positions = nn.Embedding(block, d_model)
        nn.init.normal_(self.embedding.weight, std=0.02)
        nn.init.normal_(self.positions.weight, std=0.02)
        self.blocks = nn.Sequential(*[GptBlock(d_model) for _ in range(n_layers)])
        self.norm = nn.LayerNorm(d_model)

    def forward(self, ids):
        x = self.embedding(ids) + self.positions(torch.arange(ids.shape[1], device=ids.device))
        return self.norm(self.blocks(x)) @ self.embedding.weight.T


class Lstm(nn.Module):
    def __init__(self, vocab=65, d_embed=64, d_hidden=512):
        super().__init__()
        self.embedding = nn.Embedding(vocab, d_embed)
        self.lstm = nn.LSTM(d_embed, d_hidden, batch_first=True)
        self.head = nn.Linear(d_hidden, vocab)

    def forward(self, ids):
        return self.head(self.lstm(self.embedding(ids))[0])


MODELS = {"cnn": Cnn, "resnet": ResNet, "vit": Vit, "gpt": Gpt, "lstm": Lstm}
# The character models' presets: window length, AdamW's learning rate and decay, clipping norm.
TEXT = {"gpt": (64, 3e-3, 0.1, 1.0), "lstm": (128, 2e-3, 0.0, 5.0)}


def steps_per_second(seconds, step):
    """Two untimed steps, then at least 3 and for at least `seconds`: steps/s of the median step."""
    step()
    step()
    started = time.perf_counter()
    times = []
    while len(times) < 3 or time.perf_counter() - started < seconds:
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return 1.0 / max(statistics.median(times), 1e-9)


def status_mib(field):
    """A size field of /proc/self/status (VmRSS, VmHWM) in MiB, or None off Linux."""
    try:
        with open("/proc/self/status") as f:
            kib = re.search(field + r":\s+(\d+)", f.read())
    except OSError:
        return None
    return int(kib.group(1)) / 1024 if kib else None


def reset_peak_memory():
    """Frees what the last model left, resets the high-water resident mark (Linux 4.0 on) and
    returns the resident set it starts from (None off Linux)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    return status_mib("VmRSS")


def memory_mib(start):
    """The peak resident set since `start` was taken, over it, in MiB."""
    peak = status_mib("VmHWM")
    return None if start is None or peak is None else peak - start


def run_name(device, threads):
    """What ran: torch's version, and the GPU's name or the CPU threads."""
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{threads} threads"
    return f"torch {torch.__version__}, {where}"


def measure(name, threads, seconds, device):
    """Training and inference items/s of model `name` on `device`, and the peak memory, as a
    dict."""
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        start = reset_peak_memory()
    model = MODELS[name]().to(device)
    parameters = sum(p.numel() for p in model.parameters())
    print(f"{run_name(device, threads)}, {name}: {parameters} parameters")
    if name in TEXT:
        train, infer = text(model, *TEXT[name], seconds, device)
    else:
        train, infer = image_throughput(model, seconds, device)
    if device.type == "cuda":
        memory = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        memory = memory_mib(start)
    print(f"memory over the start: {memory or 0:.0f} MiB")
    return {"train": train, "infer": infer, "memory_mib": memory}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS) + ["all"], default="cnn")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads")
    parser.add_argument("--seconds", type=float, default=10.0, help="time per figure")
    parser.add_argument("--json", help="write the figures here, for `pdl bench --reference`")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: this torch sees no CUDA GPU")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    names = list(MODELS) if args.model == "all" else [args.model]
    figures = {name: measure(name, args.threads, args.seconds, device) for name in names}
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"name": run_name(device, args.threads), "models": figures}, f, indent=2)


def image_throughput(model, seconds, device):
    """An image net's training and inference images/s (batches of 64 and 1000)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    images = torch.rand(64, 1, 28, 28, device=device) * 2 - 1
    targets = torch.randint(0, 10, (64,), device=device)

    def train_step():
        optimizer.zero_grad()
        loss = F.cross_entropy(model(images), targets)
        loss.backward()
        optimizer.step()
        loss.item()

    model.train()
    train = steps_per_second(seconds, train_step) * 64

    model.eval()
    infer_images = torch.rand(1000, 1, 28, 28, device=device) * 2 - 1

    def infer_step():
        with torch.no_grad():
            model(infer_images).cpu().numpy()

    infer = steps_per_second(seconds, infer_step) * 1000
    print(f"train img/s (b=64): {train:.1f}")
    print(f"infer img/s (b=1000): {infer:.1f}")
    return train, infer


def text(model, seq_len, lr, decay, clip, seconds, device, batch=64, vocab=65):
    """A character model's training and inference windows/s at its preset's shapes."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=decay)
    ids, targets = (torch.randint(0, vocab, (batch, seq_len), device=device) for _ in range(2))

    def loss_of(x, y):
        return F.cross_entropy(model(x).reshape(-1, vocab), y.reshape(-1))

    def train_step():
        optimizer.zero_grad()
        loss = loss_of(ids, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        loss.item()

    model.train()
    train = steps_per_second(seconds, train_step) * batch
    model.eval()
    infer_ids, infer_targets = (
        torch.randint(0, vocab, (batch, seq_len), device=device) for _ in range(2)
    )

    def infer_step():
        with torch.no_grad():
            loss_of(infer_ids, infer_targets).item()

    infer = steps_per_second(seconds, infer_step) * batch
    print(f"train windows/s (b={batch}x{seq_len}): {train:.1f}")
    print(f"infer windows/s (b={batch}x{seq_len}): {infer:.1f}")
    return train, infer


if __name__ == "__main__":
    main()
