"""The training loop shared by both models: seeded, early-stopped on validation macro-F1.

``accelerate`` places model and batches on a GPU where there is one, else the CPU.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from sklearn.metrics import f1_score
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from ser_models.models import MODEL_CLASSES, EmotionModel, MelCNN, MfccMLP


@dataclass
class TrainConfig:
    """Every knob of a training run, in one visible place."""

    epochs: int = 60
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 15  # epochs without a better validation macro-F1 before stopping
    label_smoothing: float = 0.1
    spec_augment: bool = True  # time and frequency masks on the log-mel (CNN only)
    seed: int = 42


@dataclass
class FitResult:
    model: EmotionModel
    best_epoch: int
    best_validation_f1: float
    seconds: float
    history: list[dict] = field(default_factory=list)


def build_model(model_type: str) -> EmotionModel:
    return MODEL_CLASSES[model_type]()


def spec_augment(batch: torch.Tensor, generator: torch.Generator, max_time: int = 30, max_freq: int = 10) -> torch.Tensor:
    """Zero one random time band and one random frequency band of each normalised log-mel (SpecAugment)."""
    n, n_mels, n_frames = batch.shape
    device = batch.device
    t_width = torch.randint(0, max_time + 1, (n, 1), generator=generator).to(device)
    t_start = (torch.rand(n, 1, generator=generator).to(device) * (n_frames - t_width)).long()
    f_width = torch.randint(0, max_freq + 1, (n, 1), generator=generator).to(device)
    f_start = (torch.rand(n, 1, generator=generator).to(device) * (n_mels - f_width)).long()
    frames = torch.arange(n_frames, device=device)[None, :]
    bands = torch.arange(n_mels, device=device)[None, :]
    keep_t = ~((frames >= t_start) & (frames < t_start + t_width))
    keep_f = ~((bands >= f_start) & (bands < f_start + f_width))
    return batch * keep_t[:, None, :] * keep_f[:, :, None]


def fit(
    model: EmotionModel,
    train_inputs: torch.Tensor,
    train_labels: torch.Tensor,
    validation_inputs: torch.Tensor,
    validation_labels: torch.Tensor,
    config: TrainConfig = TrainConfig(),
    progress: bool = True,
) -> FitResult:
    """Train on model inputs (``model.from_log_mel`` output); keep the weights of the best validation epoch."""
    started = time.perf_counter()
    set_seed(config.seed)
    if isinstance(model, MfccMLP):
        model.fit_scaler(train_inputs)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    loader = DataLoader(
        TensorDataset(train_inputs, train_labels),
        batch_size=config.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(config.seed),
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.learning_rate, total_steps=config.epochs * len(loader)
    )
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    augment = config.spec_augment and isinstance(accelerator.unwrap_model(model), MelCNN)
    mask_generator = torch.Generator().manual_seed(config.seed)

    best_f1, best_epoch, best_state, history = -1.0, 0, None, []
    epochs = tqdm(range(1, config.epochs + 1), desc=f"train {type(accelerator.unwrap_model(model)).__name__}", disable=not progress)
    for epoch in epochs:
        model.train()
        total_loss = 0.0
        for inputs, labels in loader:
            if augment:
                inputs = spec_augment(inputs, mask_generator)
            loss = loss_fn(model(inputs), labels)
            optimizer.zero_grad()
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            total_loss += loss.item() * len(labels)
        predictions = predict_logits(model, validation_inputs).argmax(dim=-1).numpy()
        validation_f1 = float(f1_score(validation_labels.numpy(), predictions, average="macro"))
        history.append({"epoch": epoch, "loss": total_loss / len(train_labels), "validation_macro_f1": validation_f1})
        if validation_f1 > best_f1:
            best_f1, best_epoch = validation_f1, epoch
            best_state = copy.deepcopy(accelerator.unwrap_model(model).state_dict())
        epochs.set_postfix(loss=f"{history[-1]['loss']:.3f}", val_f1=f"{validation_f1:.3f}", best=f"{best_f1:.3f}@{best_epoch}")
        if epoch - best_epoch >= config.patience:
            break
    model = accelerator.unwrap_model(model)
    model.load_state_dict(best_state)
    model = model.cpu().eval()
    return FitResult(model, best_epoch, best_f1, time.perf_counter() - started, history)


@torch.inference_mode()
def predict_logits(model: nn.Module, inputs: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    model.eval()
    device = next(model.parameters()).device
    return torch.cat([model(inputs[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(inputs), batch_size)])

