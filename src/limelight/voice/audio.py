"""`Audio`: a clip of mono float32 samples and its sample rate.

This is the one type that flows between the voice layer's parts: backends produce it,
`encode` turns it into bytes, `decode` builds it from bytes, the transcriber and the
analysis functions read it.  Resampling lives here (scipy's polyphase filter); codecs and
containers do not (see codec.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np


@dataclass(frozen=True, eq=False)
class Audio:
    samples: np.ndarray  # [num_samples] float32 in [-1, 1]
    sample_rate: int

    def __post_init__(self) -> None:
        assert self.samples.ndim == 1, f"mono audio expected, got shape {self.samples.shape}"
        assert self.samples.dtype == np.float32, self.samples.dtype
        assert self.sample_rate > 0, self.sample_rate

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return len(self.samples) / self.sample_rate

    @classmethod
    def silence(cls, seconds: float, sample_rate: int) -> Audio:
        return cls(np.zeros(round(seconds * sample_rate), np.float32), sample_rate)

    @classmethod
    def concat(cls, parts: Sequence[Audio], sample_rate: int | None = None) -> Audio:
        """The parts one after another, at `sample_rate` (default: the first part's)."""
        if sample_rate is None:
            if not parts:
                raise ValueError("concatenating no audio needs a sample_rate")
            sample_rate = parts[0].sample_rate
        samples = [part.resample(sample_rate).samples for part in parts]
        joined = np.concatenate(samples) if samples else np.zeros(0, np.float32)
        return cls(joined.astype(np.float32, copy=False), sample_rate)

    def resample(self, sample_rate: int) -> Audio:
        """The same sound at another sample rate (band-limited polyphase resampling)."""
        if sample_rate == self.sample_rate:
            return self
        return Audio(resample(self.samples, sample_rate / self.sample_rate), sample_rate)

    def sped_up(self, factor: float) -> Audio:
        """As if played `factor` times faster: duration / factor, every frequency × factor.
        (A backend that synthesises `factor` times slower first gets a pure pitch shift.)"""
        if factor == 1.0:
            return self
        return Audio(resample(self.samples, 1.0 / factor), self.sample_rate)


def resample(samples: np.ndarray, ratio: float) -> np.ndarray:
    """`samples` [n] resampled to about n * ratio samples (ratio approximated as up/down
    with a denominator of at most 1000, exact for the usual rates), clipped to [-1, 1]."""
    if len(samples) == 0:
        return samples.astype(np.float32)
    from scipy.signal import resample_poly  # scipy.signal takes ~0.8 s to import: on use

    fraction = Fraction(ratio).limit_denominator(1000)
    out = resample_poly(samples, fraction.numerator, fraction.denominator)
    return np.clip(out, -1.0, 1.0).astype(np.float32)
