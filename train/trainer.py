"""The training loop shared by both models: seeded, early-stopped on validation macro-F1.

``accelerate`` places model and batches on a GPU where there is one, else the CPU.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from sklearn.metrics import f1_score
from torch import nn
from tqdm.auto import tqdm

from ser_models import features
from ser_models.models import MODEL_CLASSES, EmotionModel, MfccMLP


@dataclass
class TrainConfig:
    """Every knob of a training run, in one visible place."""

    epochs: int = 60
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 15  # epochs without a better validation macro-F1 before stopping
    label_smoothing: float = 0.1
    spec_augment: bool = True  # time and frequency masks on the log-mel
    mixup: float = 0.0  # Beta(a, a) mixing of inputs and targets; 0 = off
    noise: float = 0.0  # share of clips mixed with white noise or babble at MEL_NOISE_SNR_DB; 0 = off
    seed: int = 42


@dataclass
class FitResult:
    model: EmotionModel
    best_epoch: int
    best_validation_f1: float
    seconds: float
    history: list[dict] = field(default_factory=list)


# Per-model defaults, chosen on speaker-independent folds (reports/, model_card.md).
TRAIN_CONFIGS = {
    "mel-cnn": TrainConfig(epochs=100, patience=25),
    "mel-crnn": TrainConfig(epochs=60, patience=20),
    "mfcc-mlp": TrainConfig(spec_augment=False, label_smoothing=0.0),
}
MLP_ENSEMBLE_SIZE = 5


def build_model(model_type: str, seed: int = 42) -> EmotionModel:
    set_seed(seed)  # the initial weights depend on the seed alone, not on what ran before
    model = MODEL_CLASSES[model_type]()
    return model.to(memory_format=torch.channels_last) if model_type in ("mel-cnn", "mel-crnn") else model


def spec_augment(
    log_mel: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator, max_frames: int = 30, max_bands: int = 10
) -> torch.Tensor:
    """SpecAugment: one random band of frames (within the speech) and one of mel bands per clip,
    set to that clip's mean level so the mask carries no loudness cue."""
    n, n_mels, n_frames = log_mel.shape
    device = log_mel.device
    speech_frames = torch.as_tensor(features.valid_frames(lengths.cpu().numpy()), device=device)[:, None]

    def band(size: int | torch.Tensor, max_width: int) -> tuple[torch.Tensor, torch.Tensor]:
        width = torch.randint(0, max_width + 1, (n, 1), generator=generator).to(device)
        width = torch.minimum(width, torch.as_tensor(size, device=device) - 1)
        start = (torch.rand(n, 1, generator=generator).to(device) * (size - width)).long()
        return start, width

    t_start, t_width = band(speech_frames, max_frames)
    f_start, f_width = band(n_mels, max_bands)
    frames = torch.arange(n_frames, device=device)[None, :]
    bands = torch.arange(n_mels, device=device)[None, :]
    masked_t = ((frames >= t_start) & (frames < t_start + t_width))[:, None, :]
    masked_f = ((bands >= f_start) & (bands < f_start + f_width))[:, :, None]
    level = log_mel.mean(dim=(-2, -1), keepdim=True)
    return torch.where(masked_t | masked_f, level, log_mel)


MEL_NOISE_SNR_DB = (5.0, 30.0)


def add_mel_noise(
    log_mel: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator, share: float
) -> torch.Tensor:
    """Additive noise, mixed in the mel power domain of the cached log-mel (no audio is re-read).

    Half the noisy clips get white noise (a flat spectrum through the mel filters), half get
    babble: three other clips of the batch, each at unit power. The SNR is uniform in
    MEL_NOISE_SNR_DB over the clip's speech frames; the result is floored like ``log_mel_spectrogram``.
    """
    n, n_mels, n_frames = log_mel.shape
    device = log_mel.device
    valid = torch.as_tensor(features.valid_frames(lengths.cpu().numpy()), device=device)
    speech = torch.arange(n_frames, device=device)[None, :] < valid[:, None]
    speech = speech[:, None, :].float()
    power = 10.0 ** (log_mel / 10.0)

    def unit(p: torch.Tensor) -> torch.Tensor:
        return p / ((p * speech).sum(dim=(1, 2), keepdim=True) / (speech.sum(dim=(1, 2), keepdim=True) * n_mels))

    talkers = unit(power)
    babble = sum(talkers.roll(shift, dims=0) for shift in (1, 2, 3))
    white = torch.from_numpy(features.mel_filters()).to(device).sum(dim=1)[None, :, None].expand(n, n_mels, n_frames)
    use_white = (torch.rand(n, generator=generator) < 0.5).to(device)[:, None, None]
    noise = unit(torch.where(use_white, white, babble))
    low, high = MEL_NOISE_SNR_DB
    snr_db = (low + (high - low) * torch.rand(n, generator=generator)).to(device)[:, None, None]
    noisy = (torch.rand(n, generator=generator) < share).to(device)[:, None, None]
    signal = (power * speech).sum(dim=(1, 2), keepdim=True) / (speech.sum(dim=(1, 2), keepdim=True) * n_mels)
    mixed = power + noisy * speech * noise * signal / 10.0 ** (snr_db / 10.0)
    db = 10.0 * torch.log10(torch.clamp(mixed, min=1e-10))
    floored = torch.maximum(db, db.amax(dim=(-2, -1), keepdim=True) - features.DB_RANGE)
    return torch.where(noisy.bool(), floored, log_mel)  # clean clips stay bit for bit as they were


def length_bucketed_batches(lengths: torch.Tensor, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Shuffled batches of clips of similar length, so little time is spent on padding.

    Clips are shuffled, taken 8 batches at a time, sorted by length within that pool
    and cut into batches; the batch order is then shuffled again.
    """
    order = torch.randperm(len(lengths), generator=generator)
    pool = batch_size * 8
    batches = []
    for start in range(0, len(order), pool):
        chunk = order[start : start + pool]
        chunk = chunk[torch.argsort(lengths[chunk], stable=True)]
        batches += list(chunk.split(batch_size))
    return [batches[i] for i in torch.randperm(len(batches), generator=generator)]


def fit(
    model: EmotionModel,
    train: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    validation: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    config: TrainConfig | None = None,
    progress: bool = True,
) -> FitResult:
    """Train on (log-mel, lengths, labels) triples; keep the weights of the best validation epoch.

    Model inputs are made per batch with ``model.from_log_mel``, the function inference
    uses, so augmentation acts on the log-mel and no input is computed two ways.
    """
    config = config or TrainConfig()
    started = time.perf_counter()
    set_seed(config.seed)
    if isinstance(model, MfccMLP):
        model.fit_scaler(model.from_log_mel(train[0], train[1]))
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    batch_generator = torch.Generator().manual_seed(config.seed)
    steps_per_epoch = -(-len(train[2]) // config.batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.learning_rate, total_steps=config.epochs * steps_per_epoch
    )
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    core = accelerator.unwrap_model(model)
    mask_generator = torch.Generator().manual_seed(config.seed)
    mix_seed = np.random.default_rng(config.seed)

    best_f1, best_epoch, best_state, history = -1.0, 0, None, []
    epochs = tqdm(range(1, config.epochs + 1), desc=f"train {core.model_type}", disable=not progress, mininterval=5)
    for epoch in epochs:
        model.train()
        total_loss = 0.0
        for rows in length_bucketed_batches(train[1], config.batch_size, batch_generator):
            log_mel, lengths, labels = (t[rows].to(accelerator.device) for t in train)
            if config.noise > 0:
                log_mel = add_mel_noise(log_mel, lengths, mask_generator, config.noise)
            if config.spec_augment:
                log_mel = spec_augment(log_mel, lengths, mask_generator)
            inputs = core.from_log_mel(log_mel, lengths, crop=True)
            if config.mixup > 0:
                share = float(np.random.default_rng(mix_seed.integers(2**32)).beta(config.mixup, config.mixup))
                order = torch.randperm(len(labels), generator=mask_generator).to(inputs.device)
                logits = model(share * inputs + (1 - share) * inputs[order])
                loss = share * loss_fn(logits, labels) + (1 - share) * loss_fn(logits, labels[order])
            else:
                loss = loss_fn(model(inputs), labels)
            optimizer.zero_grad()
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            total_loss += loss.item() * len(labels)
        predictions = predict_logits(core, validation[0], validation[1]).argmax(dim=-1).numpy()
        validation_f1 = float(f1_score(validation[2].numpy(), predictions, average="macro"))
        history.append({"epoch": epoch, "loss": total_loss / len(train[2]), "validation_macro_f1": validation_f1})
        if validation_f1 > best_f1:
            best_f1, best_epoch = validation_f1, epoch
            best_state = copy.deepcopy(core.state_dict())
        epochs.set_postfix(
            loss=f"{history[-1]['loss']:.3f}", val_f1=f"{validation_f1:.3f}", best=f"{best_f1:.3f}@{best_epoch}"
        )
        if epoch - best_epoch >= config.patience:
            break
    core.load_state_dict(best_state)
    return FitResult(core.cpu().eval(), best_epoch, best_f1, time.perf_counter() - started, history)


def train_model(
    model_type: str,
    train: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    validation: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    config: TrainConfig,
    progress: bool = True,
) -> FitResult:
    """Build and train a shipped model: the CNN as is, the MLP as an ensemble of MLP_ENSEMBLE_SIZE
    members, each with its own seed (initial weights, batch order, noise) and its own early stop."""
    if model_type != "mfcc-mlp":
        return fit(build_model(model_type, config.seed), train, validation, config, progress)
    members = []
    for offset in range(MLP_ENSEMBLE_SIZE):
        member_config = replace(config, seed=config.seed + offset)
        members.append(fit(build_model(model_type, member_config.seed), train, validation, member_config, progress))
    ensemble = MfccMLP.ensemble([m.model for m in members])
    predictions = predict_logits(ensemble, validation[0], validation[1]).argmax(dim=-1).numpy()
    return FitResult(
        ensemble,
        best_epoch=max(m.best_epoch for m in members),
        best_validation_f1=float(f1_score(validation[2].numpy(), predictions, average="macro")),
        seconds=sum(m.seconds for m in members),
        history=[{"member": i, "best_epoch": m.best_epoch, "history": m.history} for i, m in enumerate(members)],
    )


@torch.inference_mode()
def predict_logits(
    model: EmotionModel, log_mel: torch.Tensor, lengths: torch.Tensor, batch_size: int = 256
) -> torch.Tensor:
    model.eval()
    device = next(model.parameters()).device
    logits = []
    for i in range(0, len(log_mel), batch_size):
        batch, batch_lengths = log_mel[i : i + batch_size].to(device), lengths[i : i + batch_size].to(device)
        logits.append(model(model.from_log_mel(batch, batch_lengths, crop=True)).float().cpu())
    return torch.cat(logits)
