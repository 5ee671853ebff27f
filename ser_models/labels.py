"""The RAVDESS label set and file-naming scheme, defined once for the whole project.

A RAVDESS speech file is named ``MM-VV-EE-II-SS-RR-AA.ext``: modality, vocal channel,
emotion, intensity, statement, repetition and actor, each a two-digit code
(Livingstone & Russo, 2018).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

EMOTIONS: tuple[str, ...] = (
    "neutral",
    "calm",
    "happy",
    "sad",
    "angry",
    "fearful",
    "disgust",
    "surprised",
)
INTENSITIES: tuple[str, ...] = ("normal", "strong")
STATEMENTS: tuple[str, ...] = ("Kids are talking by the door", "Dogs are sitting by the door")
GENDERS: tuple[str, ...] = ("male", "female")

_NAME = re.compile(
    r"^(?P<modality>\d{2})-(?P<channel>\d{2})-(?P<emotion>\d{2})-(?P<intensity>\d{2})"
    r"-(?P<statement>\d{2})-(?P<repetition>\d{2})-(?P<actor>\d{2})$"
)


class RavdessNameError(ValueError):
    """A file name that does not follow the RAVDESS naming scheme."""


@dataclass(frozen=True)
class RavdessName:
    """The fields encoded in one RAVDESS file name."""

    emotion: str
    intensity: str
    statement: str
    repetition: int
    actor: int

    @property
    def gender(self) -> str:
        # Odd-numbered actors are male, even-numbered female.
        return GENDERS[(self.actor + 1) % 2]

    def as_dict(self) -> dict[str, str | int]:
        return {**asdict(self), "gender": self.gender}


def parse_ravdess_name(path: str | Path) -> RavdessName:
    """Parse a RAVDESS speech file name such as ``03-01-05-02-01-01-12.flac``.

    Raises RavdessNameError naming the file when any field is missing or out of range.
    """
    stem = Path(path).name.split(".")[0]
    match = _NAME.match(stem)
    if match is None:
        raise RavdessNameError(
            f"{Path(path).name!r} is not a RAVDESS file name (expected MM-VV-EE-II-SS-RR-AA, "
            "e.g. 03-01-05-02-01-01-12.wav)"
        )
    code = {key: int(value) for key, value in match.groupdict().items()}

    def field(name: str, values: tuple[str, ...]) -> str:
        if not 1 <= code[name] <= len(values):
            raise RavdessNameError(f"{Path(path).name!r}: {name} code {code[name]:02d} is out of range")
        return values[code[name] - 1]

    if code["modality"] != 3 or code["channel"] != 1:
        raise RavdessNameError(
            f"{Path(path).name!r}: only audio-only speech files (03-01-...) are supported, "
            f"got modality {code['modality']:02d}, vocal channel {code['channel']:02d}"
        )
    name = RavdessName(
        emotion=field("emotion", EMOTIONS),
        intensity=field("intensity", INTENSITIES),
        statement=field("statement", STATEMENTS),
        repetition=code["repetition"],
        actor=code["actor"],
    )
    if name.repetition not in (1, 2):
        raise RavdessNameError(f"{Path(path).name!r}: repetition code {name.repetition:02d} is out of range")
    if not 1 <= name.actor <= 24:
        raise RavdessNameError(f"{Path(path).name!r}: actor code {name.actor:02d} is out of range")
    if name.emotion == "neutral" and name.intensity == "strong":
        raise RavdessNameError(f"{Path(path).name!r}: RAVDESS has no strong-intensity neutral clips")
    return name
