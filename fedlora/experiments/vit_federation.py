"""Local training, evaluation and the two aggregation rules of seed 004's baseline.

FedAvg (McMahan et al., 2017, "Communication-Efficient Learning of Deep Networks from Decentralized
Data", Algorithm 1): every client trains every parameter and the server replaces each with the
example-weighted mean ``sum_k (n_k / n) w_k``. FedLoRA (seed 004): the backbone stays frozen, clients
train the LoRA factors and the head, and only those keys are sent and averaged (``average_weights_lora``).
Note that averaging ``A`` and ``B`` separately is not the average of the products ``B_k A_k``; that
inexactness is what FFA-LoRA (Sun et al., ICLR 2024), the project's main strategy, removes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 (the conventional name)

from fedlora.experiments.vit_data import Images

FLOAT32_BYTES = 4


@dataclass(frozen=True)
class LocalTraining:
    epochs: int
    batch_size: int
    learning_rate: float


@dataclass
class RoundRecord:
    round: int
    test_accuracy: float
    test_loss: float
    train_loss: float | None  # example-weighted mean of the clients' last-epoch losses; None at round 0
    seconds: float


@dataclass
class MethodRun:
    method: str
    trainable_parameters: int
    total_parameters: int
    sent_per_client_round: int  # parameters uploaded by one client in one round (the download is the same)
    rounds: list[RoundRecord] = field(default_factory=list)
    seconds: float = 0.0
    final_state: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def final_accuracy(self) -> float:
        return self.rounds[-1].test_accuracy

    @property
    def best_accuracy(self) -> float:
        return max(r.test_accuracy for r in self.rounds)

    def total_bytes(self, *, clients: int) -> int:
        """Uploads plus downloads over the run, float32: every client, every round, both directions."""
        n_rounds = len(self.rounds) - 1  # rounds[0] is the starting model
        return 2 * FLOAT32_BYTES * self.sent_per_client_round * clients * n_rounds


def client_seed(seed: int, round_: int, client: int) -> int:
    """An independent seed for one client's round (its shuffles and dropout), the same for every method."""
    return int(np.random.SeedSequence([seed, round_, client]).generate_state(1)[0])


def train_local(model: nn.Module, data: Images, *, plan: LocalTraining, seed: int) -> float:
    """Adam on the parameters that require grad (a fresh optimiser state each round: clients keep
    nothing between rounds), ``plan.epochs`` epochs of shuffled mini-batches. Returns the mean loss of
    the last epoch. Dropout draws from torch's global generator, so the caller forks it."""
    torch.manual_seed(seed)
    shuffle = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(params, lr=plan.learning_rate)
    model.train()
    epoch_loss = 0.0
    for _ in range(plan.epochs):
        order = torch.randperm(len(data), generator=shuffle)
        epoch_loss = 0.0
        for start in range(0, len(data), plan.batch_size):
            rows = order[start : start + plan.batch_size]
            optimiser.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(data.x[rows]), data.y[rows])
            loss.backward()
            optimiser.step()
            epoch_loss += float(loss.detach()) * len(rows)
    return epoch_loss / len(data)


@torch.no_grad()
def evaluate(model: nn.Module, data: Images, *, batch_size: int = 500) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``model`` on ``data``."""
    model.eval()
    correct, loss = 0, 0.0
    for start in range(0, len(data), batch_size):
        logits = model(data.x[start : start + batch_size])
        y = data.y[start : start + batch_size]
        correct += int((logits.argmax(dim=1) == y).sum())
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
    return correct / len(data), loss / len(data)


def weighted_average(states: list[dict[str, torch.Tensor]], weights: list[int]) -> dict[str, torch.Tensor]:
    """``sum_k (n_k / n) state_k`` key by key (the states must share their keys)."""
    if not states or len(states) != len(weights):
        raise ValueError(f"need one weight per state, got {len(states)} states and {len(weights)} weights")
    total = float(sum(weights))
    average = {}
    for key in states[0]:
        acc = torch.zeros_like(states[0][key])
        for state, w in zip(states, weights, strict=True):
            acc += (w / total) * state[key]
        average[key] = acc
    return average


def run_rounds(
    model: nn.Module,
    *,
    method: str,
    shared_keys: Callable[[str], bool],
    clients: list[Images],
    test: Images,
    rounds: Iterable[int],
    plan: LocalTraining,
    seed: int,
    clock: Callable[[], float],
    on_round: Callable[[RoundRecord], None] | None = None,
) -> MethodRun:
    """Federate ``model``'s keys chosen by ``shared_keys`` over ``rounds``; the rest never leave the
    server's starting model (for FedLoRA: the frozen backbone every client already holds)."""
    keys = [k for k in model.state_dict() if shared_keys(k)]
    params = dict(model.named_parameters())
    if any(not params[k].requires_grad for k in keys if k in params):
        raise ValueError(f"{method}: a shared key is frozen")
    run = MethodRun(
        method=method,
        trainable_parameters=sum(p.numel() for p in model.parameters() if p.requires_grad),
        total_parameters=sum(p.numel() for p in model.parameters()),
        sent_per_client_round=sum(model.state_dict()[k].numel() for k in keys),
    )
    start = clock()
    accuracy, loss = evaluate(model, test)
    run.rounds.append(RoundRecord(0, accuracy, loss, None, 0.0))
    global_state = {k: v.clone() for k, v in model.state_dict().items() if k in keys}
    for round_ in rounds:
        uploads, sizes, losses = [], [], []
        for client, data in enumerate(clients):
            model.load_state_dict(global_state, strict=False)  # the download
            losses.append(train_local(model, data, plan=plan, seed=client_seed(seed, round_, client)))
            uploads.append({k: v.detach().clone() for k, v in model.state_dict().items() if k in keys})
            sizes.append(len(data))
        global_state = weighted_average(uploads, sizes)
        model.load_state_dict(global_state, strict=False)
        accuracy, loss = evaluate(model, test)
        train_loss = float(np.average(losses, weights=sizes))
        record = RoundRecord(round_, accuracy, loss, train_loss, clock() - start)
        run.rounds.append(record)
        if on_round is not None:
            on_round(record)
    run.seconds = clock() - start
    run.final_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return run
