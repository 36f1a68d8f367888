"""Visemes: the mouth shapes that espeak's English phonemes map to.

The inventory is the 15-class MPEG-4/Oculus set. Two utterances of one sentence have the same
viseme sequence whatever their timing, which is what the corpus's same-sentence pairs rely on.

espeak-ng 1.52 (en-us) names phonemes with ASCII mnemonics: stress marks come first (``'`` primary,
``,`` secondary; ``%``/``=`` exist too) and variants add a suffix (``@2``, ``t#`` flap, ``r-``
linking r, ``O2``, ``i@3``, ``3:``). Lookup strips the stress marks, tries the exact name, then the
name without its suffix, then its first letter; anything still unknown is silence, as are the
pauses (``_``, ``_:``, ``_!``).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from scmcl.corpus.speech import Phone

VISEMES: tuple[str, ...] = ("sil", "PP", "FF", "TH", "DD", "kk", "CH", "SS", "nn", "RR", "aa", "E", "I", "O", "U")
SILENCE = VISEMES.index("sil")

_STRESS = "',%="
_SUFFIX = "0123456789#:-/"

#: Mnemonic (stress marks removed) → viseme. Diphthongs take the shape of their first vowel,
#: r-coloured vowels the shape of their vowel except ɚ/ɜː, which are spoken with r-shaped lips.
_CLASSES: dict[str, tuple[str, ...]] = {
    "sil": ("?",),  # glottal stop ("button", "uh-oh"): a closure with no mouth shape of its own
    "PP": ("p", "b", "m"),
    "FF": ("f", "v"),
    "TH": ("T", "D"),
    "DD": ("t", "d"),
    "kk": ("k", "g", "N", "h", "x", "C"),  # velars, and the open, unshaped mouth of h
    "CH": ("tS", "dZ", "S", "Z"),
    "SS": ("s", "z"),
    "nn": ("n", "l", "L", "@L"),  # @L: syllabic l ("table")
    "RR": ("r", "R", "3"),  # 3, 3:: the r-coloured vowels of "river", "bird"
    "aa": ("a", "A", "aa", "A@", "0", "V", "aI", "aI@", "aU", "aU@"),
    "E": ("E", "e", "e@", "eI", "@", "a#"),  # a#: the reduced "a" of "along"
    "I": ("I", "i", "i@", "j", ";"),  # ";": espeak's linking [j] glide ("the‿old")
    "O": ("O", "o", "o@", "oU", "OI"),
    "U": ("U", "u", "U@", "w"),
}
_TABLE: dict[str, int] = {m: VISEMES.index(v) for v, mnemonics in _CLASSES.items() for m in mnemonics}


@lru_cache(maxsize=None)
def viseme_of(phoneme: str) -> int:
    """Viseme id of an espeak mnemonic; unknown names fall back to a close class or silence."""
    core = phoneme.lstrip(_STRESS)
    if not core or core.startswith("_"):
        return SILENCE
    for candidate in (core, core.rstrip(_SUFFIX), core[0]):
        if candidate in _TABLE:
            return _TABLE[candidate]
    return SILENCE


def viseme_track(phones: list[Phone], fps: float, n_frames: int) -> np.ndarray:
    """Viseme id active at each video frame centre ((k + 0.5) / fps); silence outside the phones."""
    centres = (np.arange(n_frames) + 0.5) / fps
    starts = np.array([p.start for p in phones], dtype=np.float64)
    ends = np.array([p.end for p in phones] + [np.inf])  # last entry: sentinel for "before the first phone"
    ids = np.array([viseme_of(p.phoneme) for p in phones] + [SILENCE])
    index = np.searchsorted(starts, centres, side="right") - 1  # -1 selects the sentinels
    return np.where(centres < ends[index], ids[index], SILENCE)


def viseme_sequence(phones: list[Phone]) -> list[int]:
    """The timing-free identity of an utterance: visemes without silences or repeats."""
    sequence: list[int] = []
    for phone in phones:
        viseme = viseme_of(phone.phoneme)
        if viseme != SILENCE and (not sequence or sequence[-1] != viseme):
            sequence.append(viseme)
    return sequence
