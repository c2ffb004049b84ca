"""Sparse MLPs on scikit-learn's digits (bundled with scikit-learn: nothing is downloaded).

Trains one MLP shape five ways and prints accuracy, parameter count and inference time:

- dense: ``nn.Linear`` layers, trained;
- pruned: the dense model after ``torchwire.sparsify(density)`` and
  ``torchwire.prune.dead_neurons``, not retrained;
- pruned + finetuned: the same, trained a few more epochs;
- static sparse: ``SparseLinear`` layers with a fixed random wiring of that density;
- dynamic sparse: the same start, rewired during training by ``torchwire.DynamicSparsity``
  (RigL: drop the weakest connections, grow where the gradient is largest).

Inference times are medians over interleaved rounds of all five models in one run, threads
pinned, so their ratios are comparable. Run::

    python examples/digits_sparse.py                      # the documented configuration
    python examples/digits_sparse.py --markdown out.md    # also write the table
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

import torchwire as tw


@dataclass
class Row:
    name: str
    accuracy: list[float]  # test accuracy for each seed
    parameters: int
    ms: dict[int, float]  # median inference time per batch size


def digits(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Standardised train/test split of the 1,797 8x8 digit images (80% / 20%)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, random_state=seed, stratify=y
    )
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    as_x = lambda a: torch.tensor((a - mean) / std, dtype=torch.float32)  # noqa: E731
    as_y = lambda a: torch.tensor(a, dtype=torch.long)  # noqa: E731
    return as_x(x_train), as_y(y_train), as_x(x_test), as_y(y_test)


def dense_mlp(hidden: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(64, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, 10),
    )


def sparse_mlp(hidden: int, density: float, seed: int) -> nn.Sequential:
    """The same shape with every layer a SparseLinear of a random wiring of ``density``."""
    sizes = [(64, hidden), (hidden, hidden), (hidden, 10)]
    layers: list[nn.Module] = []
    for k, (n_in, n_out) in enumerate(sizes):
        wiring = tw.Wiring.random(n_in, n_out, density=density, seed=seed + k)
        layers += [tw.SparseLinear(wiring), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def train(
    model: nn.Module,
    data: tuple[torch.Tensor, ...],
    epochs: int,
    *,
    lr: float = 1e-3,
    batch: int = 64,
    seed: int = 0,
    rewire: Callable[[nn.Module, torch.optim.Optimizer, int], Any] | None = None,
) -> nn.Module:
    """Adam on cross-entropy; ``rewire(model, optimizer, total_steps)`` makes a
    DynamicSparsity whose ``step()`` runs after every optimizer step."""
    x, y = data[0], data[1]
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    steps_per_epoch = -(-len(x) // batch)
    sparsity = rewire(model, optimizer, epochs * steps_per_epoch) if rewire else None
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch):
            idx = order[start : start + batch]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if sparsity is not None:
                sparsity.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((model.eval()(x).argmax(1) == y).float().mean())


def parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def inference_ms(models: dict[str, nn.Module], x: torch.Tensor, rounds: int) -> dict[str, float]:
    """Median ms per forward of each model, the models interleaved in every round."""
    calls = max(1, int(0.02 / _seconds(models, x)))  # about 20 ms of calls per measurement
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            start = time.perf_counter()
            for _ in range(calls):
                model(x)
            times[name].append((time.perf_counter() - start) / calls * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def _seconds(models: dict[str, nn.Module], x: torch.Tensor) -> float:
    for model in models.values():
        model(x)  # warm up
    start = time.perf_counter()
    for model in models.values():
        model(x)
    return max((time.perf_counter() - start) / len(models), 1e-6)


def train_models(
    data: tuple[torch.Tensor, ...],
    *,
    hidden: int,
    density: float,
    epochs: int,
    finetune_epochs: int,
    seed: int,
) -> dict[str, nn.Module]:
    """The five models, trained on ``data`` from seed ``seed``."""
    torch.manual_seed(seed)
    dense = train(dense_mlp(hidden), data, epochs, seed=seed)
    pruned = tw.prune.dead_neurons(tw.sparsify(dense, density=density)).eval()
    finetuned = train(copy.deepcopy(pruned), data, finetune_epochs, seed=seed + 1)
    torch.manual_seed(seed)
    static = train(sparse_mlp(hidden, density, seed), data, epochs, seed=seed)

    def rigl(model: nn.Module, optimizer: torch.optim.Optimizer, total: int) -> Any:
        return tw.DynamicSparsity(
            model,
            optimizer,
            update_every=25,
            drop_fraction=0.3,
            end_step=int(0.75 * total),
            seed=seed,
        )

    torch.manual_seed(seed)
    dynamic = train(sparse_mlp(hidden, density, seed), data, epochs, seed=seed, rewire=rigl)
    return {
        "dense": dense,
        f"pruned ({density:.0%} sparsify + dead_neurons)": pruned,
        "pruned + finetuned": finetuned,
        f"static sparse {density:.0%}": static,
        f"dynamic sparse {density:.0%} (RigL)": dynamic,
    }


def run(
    *,
    hidden: int = 1024,
    density: float = 0.1,
    epochs: int = 40,
    finetune_epochs: int = 10,
    rounds: int = 21,
    batches: tuple[int, ...] = (1, 64, 360),
    seeds: tuple[int, ...] = (0, 1, 2),
) -> list[Row]:
    """Train the five models once per seed (a new data split and start each time) and time
    the first seed's models; returns one row per model."""
    accuracies: dict[str, list[float]] = {}
    timed: dict[str, nn.Module] = {}
    x_time = torch.zeros(0)
    for seed in seeds:
        data = digits(seed)
        models = train_models(
            data,
            hidden=hidden,
            density=density,
            epochs=epochs,
            finetune_epochs=finetune_epochs,
            seed=seed,
        )
        for name, model in models.items():
            accuracies.setdefault(name, []).append(accuracy(model, data[2], data[3]))
        if not timed:
            timed, x_time = models, data[2]
    times = {b: inference_ms(timed, x_time[:b], rounds) for b in batches}
    return [
        Row(name, accuracies[name], parameters(model), {b: times[b][name] for b in batches})
        for name, model in timed.items()
    ]


def markdown(rows: list[Row], config: dict[str, Any]) -> str:
    dense = rows[0]
    lines = [
        f"# Sparse MLPs on digits: {config['hidden']}-wide, {config['density']:.0%} density",
        "",
        f"{_cpu_name()}, torch {torch.__version__}, torchwire "
        f"{tw.__version__}, float32, {torch.get_num_threads()} thread(s); "
        f"MLP 64-{config['hidden']}-{config['hidden']}-10, Adam, {config['epochs']} epochs "
        f"({config['finetune_epochs']} to finetune), scikit-learn digits, 360 test images; "
        f"seeds {', '.join(map(str, config['seeds']))} (each its own split and start; times "
        "and parameters from the first). "
        f"Inference: one forward of the first B test images under torch.no_grad(), median "
        f"of {config['rounds']} interleaved rounds; x dense = dense time / model time.",
        "",
        "| model | test accuracy (mean) | per seed | parameters | "
        + " | ".join(f"ms (B={b}) | x dense (B={b})" for b in dense.ms)
        + " |",
        "|---|---:|---:|---:|" + "---:|---:|" * len(dense.ms),
    ]
    for row in rows:
        cells = [f"{row.ms[b]:.3g} | {dense.ms[b] / row.ms[b]:.2f}x" for b in dense.ms]
        mean = statistics.mean(row.accuracy)
        each = ", ".join(f"{a:.1%}" for a in row.accuracy)
        lines.append(
            f"| {row.name} | {mean:.2%} | {each} | {row.parameters:,} | {' | '.join(cells)} |"
        )
    return "\n".join(lines) + "\n"


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"CPU {line.split(':', 1)[1].strip()}"
    except OSError:
        pass
    return f"CPU {platform.processor() or platform.machine()}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--density", type=float, default=0.1)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--finetune-epochs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64, 360])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--markdown", help="also write the table to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = {k: v for k, v in vars(args).items() if k not in ("markdown", "threads")}
    config["batches"] = tuple(config["batches"])
    config["seeds"] = tuple(config["seeds"])
    table = markdown(run(**config), config)
    print(table)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table)


if __name__ == "__main__":
    main()
