import librosa
import numpy as np
import pytest
import torch

from ser_models import EmotionRecognizer, SilentAudioError, TooShortError, features
from ser_models.audio import SAMPLE_RATE, load_audio
from train.data import load_ravdess, tensors, with_log_mel


def test_trim_matches_librosa(angry_clip):
    audio = load_audio(angry_clip)
    trimmed = features.trim_silence(audio, top_db=25)
    _, (start, end) = librosa.effects.trim(audio, top_db=25)
    assert (trimmed.start, trimmed.end) == (start, end)


def test_shipped_mel_filters_are_librosas():
    expected = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=features.N_FFT, n_mels=features.N_MELS)
    assert torch.equal(features.mel_filters(), torch.from_numpy(expected))


def test_mfcc_statistics_match_librosa(angry_clip):
    speech = features.trim_silence(load_audio(angry_clip)).audio
    audio, lengths = features.batch_inputs([speech])
    ours = features.mfcc_statistics(features.log_mel_spectrogram(audio), lengths)[0].numpy()
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
    assert normalized[0, :, speech_frames:].abs().max() == 0
    assert abs(float(normalized[0, :, :speech_frames].mean())) < 1e-4
    assert abs(float(normalized[0, :, :speech_frames].std()) - 1) < 1e-2


def test_training_and_inference_paths_give_the_same_features(ravdess_dir, sample_clips):
    """The cached training features and the app/CLI path agree to float precision."""
    dataset = with_log_mel(load_ravdess(ravdess_dir, actors=[2]))
    log_mel, lengths, _ = tensors(dataset)
    paths = dataset["audio"]
    for model_name in ("mel-cnn", "mfcc-mlp"):
        recognizer = EmotionRecognizer.from_pretrained(model_name)
        model = recognizer.model
        for clip in sample_clips:
            row = next(i for i, a in enumerate(paths) if a["path"].endswith(clip.name))
            audio, clip_lengths = features.batch_inputs([recognizer.trim(load_audio(clip))])
            served = model.featurize(audio, clip_lengths)
            trained = model.from_log_mel(log_mel[row : row + 1], lengths[row : row + 1])
            torch.testing.assert_close(served, trained, rtol=1e-4, atol=1e-4)


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
