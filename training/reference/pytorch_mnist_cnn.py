"""PyTorch's throughput on the net `pdl bench` times, for `--reference-train` / `--reference-infer`.

The network of pytorch/examples `mnist/main.py` (conv32-conv64-maxpool-fc128, dropout 0.25 and
0.5), trained on seeded noise images in batches of 64 with AdamW (lr 1e-3), and run forward in
batches of 1000 without gradients, as `training/src/bench.rs` does: two untimed warm-up steps,
then at least 3 steps and at least `--seconds`.

    python3 training/reference/pytorch_mnist_cnn.py --threads 2
    cargo xtask bench --reference-train <train img/s> --reference-infer <infer img/s>

Needs only `torch`; no dataset, no network. The tests never run it.
"""

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn


class Net(nn.Module):
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


def steps_per_second(seconds, step):
    step()
    step()
    started = time.perf_counter()
    steps = 0
    while steps < 3 or time.perf_counter() - started < seconds:
        step()
        steps += 1
    return steps / (time.perf_counter() - started)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads")
    parser.add_argument("--seconds", type=float, default=10.0, help="time per figure")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model = Net()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    images = torch.rand(64, 1, 28, 28) * 2 - 1
    targets = torch.randint(0, 10, (64,))

    def train_step():
        optimizer.zero_grad()
        loss = F.cross_entropy(model(images), targets)
        loss.backward()
        optimizer.step()
        loss.item()

    model.train()
    train = steps_per_second(args.seconds, train_step) * 64

    model.eval()
    infer_images = torch.rand(1000, 1, 28, 28) * 2 - 1

    def infer_step():
        with torch.no_grad():
            model(infer_images).numpy()

    infer = steps_per_second(args.seconds, infer_step) * 1000
    print(f"torch {torch.__version__}, {args.threads} threads")
    print(f"train img/s (b=64): {train:.1f}")
    print(f"infer img/s (b=1000): {infer:.1f}")


if __name__ == "__main__":
    main()
