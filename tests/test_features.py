import librosa
import numpy as np
import pytest
import torch

from ser_models import MODELS, EmotionRecognizer, SilentAudioError, TooShortError, features
from ser_models.audio import SAMPLE_RATE, load_audio
from ser_models.models import EmotionModel
from ser_models.scorers import model_inputs
from train.data import load_ravdess, tensors, with_log_mel


def test_trim_matches_librosa(angry_clip):
    audio = load_audio(angry_clip)
    trimmed = features.trim_silence(audio, top_db=25)
    _, (start, end) = librosa.effects.trim(audio, top_db=25)
    assert (trimmed.start, trimmed.end) == (start, end)


def test_shipped_mel_filters_are_librosas():
    expected = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=features.N_FFT, n_mels=features.N_MELS)
    assert np.array_equal(features.mel_filters(), expected)


def test_mfcc_statistics_match_librosa(angry_clip):
    speech = features.trim_silence(load_audio(angry_clip)).audio
    audio, lengths = features.batch_inputs([speech])
    ours = features.mfcc_statistics(features.log_mel_spectrogram(audio), lengths)[0]
    mel = librosa.feature.melspectrogram(
        y=speech, sr=SAMPLE_RATE, n_fft=features.N_FFT, hop_length=features.HOP_LENGTH, n_mels=features.N_MELS
    )
    mfcc = librosa.feature.mfcc(S=librosa.power_to_db(mel, top_db=80), n_mfcc=features.N_MFCC)
    # Only the edge frames differ (librosa pads the unpadded clip by reflection).
    assert np.abs(ours[: features.N_MFCC] - mfcc.mean(axis=1)).max() < 0.5
    assert np.corrcoef(ours[features.N_MFCC :], mfcc.std(axis=1))[0, 1] > 0.99


def test_log_mel_shape_and_padding_is_neutral():
    rng = np.random.default_rng(0)
    speech = (0.1 * rng.standard_normal(SAMPLE_RATE)).astype(np.float32)
    audio, lengths = features.batch_inputs([speech])
    log_mel = features.log_mel_spectrogram(audio)
    assert log_mel.shape == (1, features.N_MELS, features.N_FRAMES) == (1, 64, 201)
    normalized = features.normalized_log_mel(log_mel, lengths)
    speech_frames = int(features.valid_frames(lengths)[0])
    assert np.abs(normalized[0, :, speech_frames:]).max() == 0
    assert abs(float(normalized[0, :, :speech_frames].mean())) < 1e-4
    assert abs(float(normalized[0, :, :speech_frames].std()) - 1) < 1e-2


def recognizer_folder(name):
    return MODELS[name].folder


def test_training_and_inference_paths_give_the_same_features(ravdess_dir, sample_clips):
    """The cached training features and the app/CLI path agree to float precision."""
    dataset = with_log_mel(load_ravdess(ravdess_dir, actors=[2]))
    log_mel, lengths, _ = tensors(dataset)
    paths = dataset["audio"]
    for model_name in ("mel-cnn", "mfcc-mlp"):
        recognizer = EmotionRecognizer.from_pretrained(model_name)
        model = EmotionModel.from_pretrained(recognizer_folder(model_name))
        for clip in sample_clips:
            row = next(i for i, a in enumerate(paths) if a["path"].endswith(clip.name))
            audio, clip_lengths = features.batch_inputs([recognizer.trim(load_audio(clip))])
            served = model_inputs(recognizer.config, audio, clip_lengths)
            trained = model.from_log_mel(log_mel[row : row + 1], lengths[row : row + 1])
            np.testing.assert_allclose(served, trained.numpy(), rtol=1e-4, atol=1e-4)


def test_silence_and_short_sounds_are_refused():
    from ser_models import find_speech

    with pytest.raises(SilentAudioError):
        features.trim_silence(np.zeros(SAMPLE_RATE * 2, dtype=np.float32))
    # A faint hum is not digital silence, so trimming keeps it; the speech check refuses it.
    with pytest.raises(SilentAudioError):
        find_speech(np.full(SAMPLE_RATE * 2, 1e-5, dtype=np.float32))
    click = np.zeros(SAMPLE_RATE * 2, dtype=np.float32)
    click[SAMPLE_RATE : SAMPLE_RATE + 800] = 0.5
    with pytest.raises(TooShortError):
        features.trim_silence(click)


def test_long_speech_is_covered_by_overlapping_windows():
    audio = np.arange(int(10.3 * SAMPLE_RATE), dtype=np.float32)
    windows = features.chunk(audio)
    assert all(w.size == features.N_SAMPLES for w in windows)
    assert windows[0][0] == 0 and windows[-1][-1] == audio[-1]
    assert len(features.chunk(audio[: features.N_SAMPLES])) == 1


# The log-mel the bundled weights were trained on: torch.stft, as ser_models/features.py computed it
# before serving dropped torch. The numpy implementation must give the networks the same inputs.
def torch_log_mel(audio: np.ndarray, lengths: np.ndarray) -> torch.Tensor:
    waveform = torch.from_numpy(audio)[:, : features.audible_samples(lengths)]
    window = torch.hann_window(features.N_FFT)
    stft = torch.stft(waveform, features.N_FFT, features.HOP_LENGTH, window=window, return_complex=True)
    power = stft.real.square() + stft.imag.square()
    mel = torch.nn.functional.pad(
        torch.from_numpy(features.mel_filters()) @ power, (0, features.N_FRAMES - power.shape[-1])
    )
    db = 10.0 * torch.log10(torch.clamp(mel, min=1e-10))
    return torch.maximum(db, db.amax(dim=(-2, -1), keepdim=True) - features.DB_RANGE)


def test_numpy_features_equal_the_torch_features_the_models_were_trained_on(sample_clips):
    speech = [features.trim_silence(load_audio(clip)).audio for clip in sample_clips]
    audio, lengths = features.batch_inputs(speech)
    ours = features.log_mel_spectrogram(audio, lengths)
    theirs = torch_log_mel(audio, lengths).numpy()
    assert np.abs(ours - theirs).max() < 1e-3  # dB; float32 rounding in quiet bins, far below the 80 dB range
    for per_band in (False, True):
        served = features.normalized_log_mel(ours, lengths, per_band)
        trained = features.normalized_log_mel(theirs, lengths, per_band)
        assert np.abs(served - trained).max() < 1e-4
    np.testing.assert_allclose(
        features.mfcc_statistics(ours, lengths), features.mfcc_statistics(theirs, lengths), rtol=1e-5, atol=1e-4
    )


def test_whisper_log_mel_in_numpy_equals_openai_whispers_torch_version(sample_clips):
    from ser_models import whisper

    audio = features.trim_silence(load_audio(sample_clips[0])).audio
    waveform = torch.from_numpy(audio)
    stft = torch.stft(
        waveform, whisper.N_FFT, whisper.MEL_HOP, window=torch.hann_window(whisper.N_FFT), return_complex=True
    )
    magnitudes = stft[..., :-1].abs() ** 2
    log_spec = torch.clamp(torch.from_numpy(whisper.mel_filters()) @ magnitudes, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    expected = ((log_spec + 4.0) / 4.0).numpy()
    assert np.abs(whisper.log_mel_spectrogram(audio) - expected).max() < 1e-4
