"""Objective measures of speech for tests and benchmarks: pitch, speaking rate, word errors.

These are measuring instruments, not part of synthesis: `median_pitch` is a YIN estimator
(de Cheveigné & Kawahara 2002) in numpy, `speaking_rate` counts words per second of
sounding audio, `word_error_rate` is the word-level Levenshtein distance used to score
speech recognition.  Written here because each is a few lines of numpy, and the libraries
that have them (librosa, jiwer) would be new dependencies for the tests alone.
"""

from __future__ import annotations

import itertools
import re

import numpy as np

from limelight.voice.audio import Audio

ANALYSIS_RATE = 16000
PITCH_RANGE_HZ = (60.0, 500.0)
FRAME_S = 0.010  # hop between analysis frames
WINDOW_S = 0.025  # YIN integration window
YIN_THRESHOLD = 0.15  # first dip of the normalised difference below this is the period
VOICED_THRESHOLD = 0.3  # frames whose best dip stays above this are unvoiced
SILENCE_DB = -30.0  # frame level, relative to the loud (95th percentile) frames
FLOOR_DB = -60.0  # and absolute (full scale = 0 dB): digital silence is never speech
MAX_GAP_S = 0.15  # quiet stretches shorter than this count as speech (stops, word joins)


def median_pitch(audio: Audio) -> float:
    """Median fundamental frequency in Hz over the voiced frames (0.0 if none are)."""
    x = audio.resample(ANALYSIS_RATE).samples.astype(np.float64)
    window = round(WINDOW_S * ANALYSIS_RATE)
    max_lag = round(ANALYSIS_RATE / PITCH_RANGE_HZ[0])
    min_lag = round(ANALYSIS_RATE / PITCH_RANGE_HZ[1])
    frames = _frames(x, window + max_lag)  # [F, window + max_lag]
    if len(frames) == 0:
        return 0.0
    loud = _is_sounding(frames[:, :window])
    cmnd = _cumulative_mean_normalized_difference(frames, window, max_lag)  # [F, max_lag + 1]
    pitches = []
    for row in cmnd[loud]:
        lag = _first_dip(row, min_lag)
        if lag is not None:
            pitches.append(ANALYSIS_RATE / lag)
    return float(np.median(pitches)) if pitches else 0.0


def speaking_rate(audio: Audio, num_words: int) -> float:
    """Words per second of sounding audio (pauses of MAX_GAP_S or more left out)."""
    x = audio.resample(ANALYSIS_RATE).samples.astype(np.float64)
    hop = round(FRAME_S * ANALYSIS_RATE)
    frames = _frames(x, 2 * hop)  # [F, 2 * hop]
    if len(frames) == 0:
        return 0.0
    sounding = _fill_gaps(_is_sounding(frames), round(MAX_GAP_S / FRAME_S))
    seconds = sounding.sum() * FRAME_S
    return num_words / seconds if seconds > 0 else 0.0


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / reference words, ignoring case and
    punctuation.  0.0 for two empty texts, 1.0 for any hypothesis of an empty reference."""
    ref, hyp = _words(reference), _words(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    distances = np.arange(len(hyp) + 1)  # edit distance from ref[:i] to each hyp[:j]
    for i, word in enumerate(ref, start=1):
        previous, distances = distances, np.empty_like(distances)
        distances[0] = i
        for j, other in enumerate(hyp, start=1):
            distances[j] = min(
                previous[j] + 1, distances[j - 1] + 1, previous[j - 1] + (word != other)
            )
    return float(distances[-1]) / len(ref)


def _words(text: str) -> list[str]:
    text = re.sub(r"[-–—/]", " ", text.lower())
    return re.sub(r"[^\w\s]", "", text).split()  # it's = its


def _frames(x: np.ndarray, length: int) -> np.ndarray:
    """[F, length] overlapping frames, one per FRAME_S hop."""
    hop = round(FRAME_S * ANALYSIS_RATE)
    if len(x) < length:
        return np.zeros((0, length))
    return np.lib.stride_tricks.sliding_window_view(x, length)[::hop]


def _frame_levels(frames: np.ndarray) -> np.ndarray:
    """[F] level of each frame in dB."""
    return 10.0 * np.log10(np.mean(frames**2, axis=1) + 1e-12)


def _is_sounding(frames: np.ndarray) -> np.ndarray:
    """[F] whether each frame is loud enough to be speech."""
    levels = _frame_levels(frames)
    threshold = max(float(np.percentile(levels, 95)) + SILENCE_DB, FLOOR_DB)
    return levels > threshold


def _cumulative_mean_normalized_difference(
    frames: np.ndarray, window: int, max_lag: int
) -> np.ndarray:
    """YIN's d'(tau) for tau in 0..max_lag, for every frame: [F, max_lag + 1]."""
    size = 1 << int(np.ceil(np.log2(frames.shape[1] + window)))
    head = np.fft.rfft(frames[:, :window], size)
    # r[tau] = sum_j x[j] x[j + tau], j < window
    correlation = np.fft.irfft(np.fft.rfft(frames, size) * np.conj(head), size)
    correlation = correlation[:, : max_lag + 1]
    energy = np.cumsum(np.pad(frames**2, ((0, 0), (1, 0))), axis=1)  # [F, window+max_lag+1]
    lags = np.arange(max_lag + 1)
    shifted_energy = energy[:, lags + window] - energy[:, lags]  # sum of x[tau : tau+window]^2
    difference = energy[:, [window]] + shifted_energy - 2.0 * correlation  # [F, max_lag + 1]
    running_mean = np.cumsum(difference[:, 1:], axis=1) / lags[1:]
    normalized = np.ones_like(difference)
    normalized[:, 1:] = difference[:, 1:] / np.maximum(running_mean, 1e-12)
    return normalized


def _first_dip(row: np.ndarray, min_lag: int) -> float | None:
    """The period in samples (parabolically refined), or None for an unvoiced frame."""
    candidates = np.flatnonzero(row[min_lag:-1] < YIN_THRESHOLD)
    if len(candidates):
        lag = int(candidates[0]) + min_lag
        while lag + 1 < len(row) - 1 and row[lag + 1] < row[lag]:
            lag += 1  # slide down to the bottom of this dip
    else:
        lag = int(np.argmin(row[min_lag:-1])) + min_lag
        if row[lag] > VOICED_THRESHOLD:
            return None
    left, centre, right = row[lag - 1], row[lag], row[lag + 1]
    curvature = left - 2.0 * centre + right
    offset = 0.5 * (left - right) / curvature if curvature > 0 else 0.0
    return lag + offset


def _fill_gaps(mask: np.ndarray, max_gap: int) -> np.ndarray:
    """`mask` with runs of False shorter than `max_gap` between two Trues set True."""
    filled = mask.copy()
    on = np.flatnonzero(mask)
    for start, end in itertools.pairwise(on):
        if 1 < end - start <= max_gap:
            filled[start:end] = True
    return filled
