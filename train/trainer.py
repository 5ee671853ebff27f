"""The training loop shared by both models: seeded, early-stopped on validation macro-F1.

``accelerate`` places model and batches on a GPU where there is one, else the CPU, and runs the same
loop data-parallel under ``accelerate launch --num_processes N`` (one process per GPU, or gloo on CPUs):

- every process builds the same model, split and batch order from the same seed; ``prepare`` wraps the
  model in DistributedDataParallel and hands each process whole batches of that order, round-robin;
- ``TrainConfig.batch_size`` is the batch of one optimizer step over all processes, so each process
  takes ``batch_size / N`` clips a step and the learning-rate schedule keeps its length: a run on N
  processes trains with the tuned hyperparameters (raise ``batch_size`` to give each GPU more work);
- augmentation and dropout draw from seeds offset by the process index (process 0 keeps the seed, so
  one process trains bit for bit as before);
- every epoch each process predicts its share of the validation clips, the predictions are gathered
  with ``gather_for_metrics``, and the main process's early-stopping decision is broadcast, so all
  processes stop at the same epoch and keep the same best weights.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import broadcast, parse_flag_from_env, set_seed
from sklearn.metrics import f1_score
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from ser_models import features
from ser_models.models import MODEL_CLASSES, EmotionModel, MfccMLP


@dataclass
class TrainConfig:
    """Every knob of a training run, in one visible place."""

    epochs: int = 60
    batch_size: int = 32  # clips per optimizer step, over all processes of a distributed run
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
VALIDATION_BATCH = 256  # clips per validation batch, over all processes


def use_cpu() -> bool:
    """Train on the CPU: no GPU here, or ``accelerate launch --cpu`` (ACCELERATE_USE_CPU) asked for it."""
    return not torch.cuda.is_available() or parse_flag_from_env("ACCELERATE_USE_CPU")


def distributed_state() -> PartialState:
    """This process's place in the run: the only one, or one of ``accelerate launch --num_processes N``.

    The first call joins the process group (gloo on CPUs, NCCL on GPUs); ``fit`` uses the same state.
    """
    return PartialState(cpu=use_cpu())


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


class LengthBucketedBatchSampler(Sampler[list[int]]):
    """``length_bucketed_batches`` as a batch sampler: a new order from ``generator`` every epoch.

    It has no ``batch_size`` attribute on purpose: ``accelerate`` then shards its batches, which vary
    in size, as they are (whole batches, round-robin over the processes) instead of dropping the
    batches that are not full. A lone clip left over joins another batch: BatchNorm cannot train on
    a batch of one, and the smaller batches of many processes leave one over more often.
    """

    def __init__(self, lengths: torch.Tensor, clips_per_batch: int, generator: torch.Generator) -> None:
        self.lengths, self.clips_per_batch, self.generator = lengths, clips_per_batch, generator

    def __iter__(self):
        batches = length_bucketed_batches(self.lengths, self.clips_per_batch, self.generator)
        lone = [i for i, rows in enumerate(batches) if len(rows) == 1]
        if self.clips_per_batch > 1 and lone and len(batches) > 1:
            (i,) = lone  # only the last pool's last batch can fall short
            rows = batches.pop(i)
            batches[max(i - 1, 0)] = torch.cat([batches[max(i - 1, 0)], rows])
        for rows in batches:
            yield rows.tolist()

    def __len__(self) -> int:
        n, pool, size = len(self.lengths), 8 * self.clips_per_batch, self.clips_per_batch
        batches = sum(-(-min(pool, n - start) // size) for start in range(0, n, pool))
        return batches - (size > 1 and batches > 1 and (n - 1) % size == 0)


class _Rows(Dataset):
    """(log-mel, lengths, labels) tensors, read a whole batch of rows at a time (one gather, no collation)."""

    def __init__(self, *tensors: torch.Tensor) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, row: int) -> tuple[torch.Tensor, ...]:
        return tuple(t[row] for t in self.tensors)

    def __getitems__(self, rows: list[int]) -> tuple[torch.Tensor, ...]:
        index = torch.as_tensor(rows)
        return tuple(t[index] for t in self.tensors)


def _as_batch(rows: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return rows


def _loader(rows: _Rows, **kwargs) -> DataLoader:
    # Its own generator, so that iterating draws nothing from the global torch RNG (dropout's).
    return DataLoader(rows, collate_fn=_as_batch, generator=torch.Generator(), **kwargs)


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
    Under ``accelerate launch`` every process calls this with the same arguments (see the module
    docstring) and gets the same model back.
    """
    config = config or TrainConfig()
    started = time.perf_counter()
    set_seed(config.seed)
    if isinstance(model, MfccMLP):
        model.fit_scaler(model.from_log_mel(train[0], train[1]))
    accelerator = Accelerator(cpu=use_cpu())
    processes, rank = accelerator.num_processes, accelerator.process_index
    # The same batch order on every process; each trains on every N-th batch of a 1/N-size batching.
    batch_generator = torch.Generator().manual_seed(config.seed)
    sampler = LengthBucketedBatchSampler(train[1], -(-config.batch_size // processes), batch_generator)
    train_batches = _loader(_Rows(*train), batch_sampler=sampler)
    validation_batches = _loader(_Rows(*validation), batch_size=-(-VALIDATION_BATCH // processes))
    # accelerate steps a prepared scheduler once per process at every optimizer step.
    scheduler_steps = config.epochs * processes * -(-len(sampler) // processes)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.learning_rate, total_steps=scheduler_steps)
    model, optimizer, scheduler, train_batches, validation_batches = accelerator.prepare(
        model, optimizer, scheduler, train_batches, validation_batches
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    core = accelerator.unwrap_model(model)
    if processes > 1:  # the initial weights are identical (DDP broadcasts them); the draws are not
        set_seed(config.seed, device_specific=True)  # dropout and input noise: seed + process index
    mask_generator = torch.Generator().manual_seed(config.seed + rank)
    mix_seed = np.random.default_rng(config.seed + rank)

    best_f1, best_epoch, best_state, history = -1.0, 0, None, []
    epochs = tqdm(
        range(1, config.epochs + 1),
        desc=f"train {core.model_type}",
        disable=not progress or not accelerator.is_main_process,
        mininterval=5,
    )
    for epoch in epochs:
        model.train()
        total_loss, clips = 0.0, 0
        for log_mel, lengths, labels in train_batches:  # on accelerator.device already
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
            clips += len(labels)
        if processes > 1:
            _share_buffers(core)
        totals = accelerator.reduce(
            torch.tensor([total_loss, clips], dtype=torch.float64, device=accelerator.device), "sum"
        )
        predictions, truth = _validation_predictions(core, validation_batches, accelerator)
        validation_f1 = float(f1_score(truth, predictions, average="macro"))
        history.append({"epoch": epoch, "loss": (totals[0] / totals[1]).item(), "validation_macro_f1": validation_f1})
        # Every process has the same gathered predictions; the main process's decisions are still
        # broadcast, so that no rounding anywhere can make one process stop or keep other weights.
        improved = validation_f1 > best_f1
        stop = epoch - (epoch if improved else best_epoch) >= config.patience
        if processes > 1:
            decided = torch.tensor([improved, stop], dtype=torch.int64, device=accelerator.device)
            improved, stop = (bool(flag) for flag in broadcast(decided).tolist())
        if improved:
            best_f1, best_epoch = validation_f1, epoch
            best_state = copy.deepcopy(core.state_dict())
        epochs.set_postfix(
            loss=f"{history[-1]['loss']:.3f}", val_f1=f"{validation_f1:.3f}", best=f"{best_f1:.3f}@{best_epoch}"
        )
        if stop:
            break
    core.load_state_dict(best_state)
    accelerator.free_memory()  # drop the DDP wrapper and optimizer; the next fit prepares its own
    return FitResult(core.cpu().eval(), best_epoch, best_f1, time.perf_counter() - started, history)


def _share_buffers(model: nn.Module) -> None:
    """Give every process the main process's BatchNorm running statistics.

    DDP broadcasts them at the start of each training forward; after an epoch's last step each
    process holds its own, which would make its share of the validation (and the kept weights) differ.
    """
    for buffer in model.buffers():
        torch.distributed.broadcast(buffer.data, src=0)


@torch.inference_mode()
def _validation_predictions(
    model: EmotionModel, batches: DataLoader, accelerator: Accelerator
) -> tuple[np.ndarray, np.ndarray]:
    """Predicted and true labels of every validation clip: each process predicts its share of the
    batches, ``gather_for_metrics`` collects them and drops the clips repeated to even the shares."""
    model.eval()
    predictions, truth = [], []
    for log_mel, lengths, labels in batches:
        predicted = model(model.from_log_mel(log_mel, lengths, crop=True)).argmax(dim=-1)
        predicted, labels = accelerator.gather_for_metrics((predicted, labels))
        predictions.append(predicted.cpu())
        truth.append(labels.cpu())
    return torch.cat(predictions).numpy(), torch.cat(truth).numpy()


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
