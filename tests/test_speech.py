"""Speech synthesis and visemes: real espeak-ng audio with a phoneme timeline that covers it,
and the corpus's premise that one sentence in two prosodies has the same visemes, timed differently."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from scmcl.corpus import speech
from scmcl.corpus.speech import EspeakUnavailable, Phone, Prosody, Speech, Voice, resample, synthesize
from scmcl.corpus.visemes import SILENCE, VISEMES, viseme_of, viseme_sequence, viseme_track

SENTENCE = "She put the blue book back on the shelf before lunch."
TEXTS = (
    SENTENCE,
    "Every morning the old man walks his dog along the river.",
    "The quick brown fox jumps over the lazy dog.",
    "Sphinx of black quartz, judge my vow!",
    "Pack my box with five dozen liquor jugs.",
    "Yes, she measured the azure treasure; oh, the joy! Thin things, though.",
)
VOICE = Voice(espeak_variant="m3", pitch=40, range=60, rate=160)
SAD = Prosody(rate_scale=0.8, pitch_shift=-10, range_scale=0.6, volume=80)
ANGRY = Prosody(rate_scale=1.12, pitch_shift=6, range_scale=1.5, volume=130)


def starts(s: Speech) -> np.ndarray:
    return np.array([p.start for p in s.phones])


@pytest.fixture(scope="module")
def neutral() -> Speech:
    return synthesize(SENTENCE, VOICE)


def test_audio_is_speech_lasting_until_the_last_phone(neutral):
    assert neutral.samples.dtype == np.float32 and neutral.samples.ndim == 1
    assert neutral.sample_rate == 22050
    assert np.abs(neutral.samples).max() <= 1.0
    assert np.sqrt(np.mean(neutral.samples**2)) > 0.02, "audio should not be silent"
    assert 1.5 < neutral.duration < 5.0
    assert neutral.phones[-1].end == pytest.approx(neutral.duration, abs=0.005)


def test_phones_are_ordered_contiguous_and_cover_the_audio(neutral):
    phones = neutral.phones
    assert len(phones) > 30
    assert phones[0] == Phone("_", 0.0, phones[0].end) and phones[0].end > 0, "leading silence"
    assert phones[-1].phoneme.startswith("_"), "trailing pause"
    for a, b in zip(phones, phones[1:]):
        assert a.start <= a.end == b.start <= b.end
    rate = neutral.sample_rate
    lead = neutral.samples[: int(phones[0].end * rate)]
    voiced = neutral.samples[int(phones[1].start * rate) : int(phones[-1].start * rate)]
    assert np.abs(lead).max() < 0.1 * np.abs(voiced).max(), "the leading '_' is silence"


def test_faster_rate_gives_shorter_audio(neutral):
    fast = synthesize(SENTENCE, VOICE, Prosody(rate_scale=1.5))
    assert fast.duration < 0.8 * neutral.duration


def test_same_sentence_two_prosodies_same_visemes_different_timing(neutral):
    sad, angry = synthesize(SENTENCE, VOICE, SAD), synthesize(SENTENCE, VOICE, ANGRY)
    assert viseme_sequence(sad.phones) == viseme_sequence(angry.phones) == viseme_sequence(neutral.phones)
    assert len(viseme_sequence(neutral.phones)) > 15
    assert len(sad.phones) == len(angry.phones)
    assert np.abs(starts(sad) - starts(angry)).max() > 0.1
    assert sad.duration > neutral.duration > angry.duration
    tracks = [viseme_track(s.phones, 25.0, 60) for s in (sad, angry)]
    assert (tracks[0] != tracks[1]).mean() > 0.2, "frame-level viseme tracks should differ"


def test_voice_variants_sound_different_but_say_the_same(neutral):
    female = synthesize(SENTENCE, Voice(espeak_variant="f2", pitch=40, range=60, rate=160))
    n = min(len(female.samples), len(neutral.samples))
    assert not np.allclose(female.samples[:n], neutral.samples[:n], atol=1e-2)
    assert viseme_sequence(female.phones) == viseme_sequence(neutral.phones)


def test_synthesis_does_not_depend_on_what_was_said_before(neutral):
    synthesize("Something else entirely, with a pause.", Voice(espeak_variant="f5"), ANGRY)
    again = synthesize(SENTENCE, VOICE)
    np.testing.assert_array_equal(again.samples, neutral.samples)
    assert again.phones == neutral.phones


def test_unknown_voices_are_rejected_and_synthesis_goes_on():
    with pytest.raises(ValueError, match="variant"):
        synthesize("Hello.", Voice(espeak_variant="no-such-variant"))
    with pytest.raises(ValueError, match="voice"):
        synthesize("Hello.", Voice(name="xx-nowhere"))
    assert len(synthesize("Hello.", Voice()).phones) > 3


def test_missing_library_gives_one_actionable_line(monkeypatch, tmp_path):
    fake = tmp_path / "espeakng_loader.py"
    fake.write_text("def get_library_path():\n    return '/nonexistent/libespeak-ng.so'\n"
                    "def get_data_path():\n    return '/nonexistent'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "espeakng_loader", raising=False)
    with pytest.raises(EspeakUnavailable) as err:
        speech._load_library()
    message = str(err.value)
    assert "\n" not in message and "espeakng-loader" in message and "pip install" in message
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)  # not installed at all
    with pytest.raises(EspeakUnavailable, match="pip install espeakng-loader"):
        speech._load_library()
    # End to end: the helper process finds the broken loader and synthesize() reports it.
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setattr(speech, "_helper", None)
    with pytest.raises(EspeakUnavailable, match="espeakng-loader") as err:
        synthesize("Hello.", Voice())
    assert "/nonexistent" in str(err.value) and "\n" not in str(err.value)


def test_viseme_track_picks_the_phone_at_each_frame_centre():
    phones = [Phone("_", 0.0, 0.1), Phone("p", 0.1, 0.2), Phone("'a", 0.2, 0.25), Phone("'E", 0.25, 0.42),
              Phone("s", 0.42, 0.5)]
    track = viseme_track(phones, fps=10.0, n_frames=7)  # centres 0.05, 0.15, ..., 0.65
    expected = ["sil", "PP", "E", "E", "SS", "sil", "sil"]  # 0.25 starts 'E; after 0.5 nothing is said
    assert [VISEMES[v] for v in track] == expected
    assert track.shape == (7,) and np.issubdtype(track.dtype, np.integer)
    assert (viseme_track([], 25.0, 4) == SILENCE).all()


def test_viseme_sequence_drops_silences_then_collapses_repeats():
    names = ["_", "m", "'a", "_:", "m", "m", "n", "_", "l", "_"]
    phones = [Phone(n, i * 0.1, (i + 1) * 0.1) for i, n in enumerate(names)]
    assert [VISEMES[v] for v in viseme_sequence(phones)] == ["PP", "aa", "PP", "nn"]


@pytest.mark.parametrize("mnemonic", ["", "'", ",", "XYZ", "q9", "æ", "_weird", "@@@", "'O3", "??", "\x00"])
def test_unknown_mnemonics_do_not_raise(mnemonic):
    assert 0 <= viseme_of(mnemonic) < len(VISEMES)


def test_variant_mnemonics_fall_back_to_their_base():
    assert VISEMES[viseme_of("'O3")] == "O"  # unknown suffix
    assert VISEMES[viseme_of("t_x")] == "DD"  # first letter
    assert VISEMES[viseme_of(",i@3")] == "I"


def test_every_mnemonic_espeak_emits_has_a_viseme():
    seen = {p.phoneme for text in TEXTS for v in (None, "f2") for p in synthesize(text, Voice(espeak_variant=v)).phones}
    assert len(seen) > 50
    for mnemonic in seen:
        viseme = viseme_of(mnemonic)
        assert 0 <= viseme < len(VISEMES)
        pause = mnemonic.lstrip("',%=").startswith(("_", "?"))
        assert pause == (viseme == SILENCE), f"{mnemonic!r} maps to {VISEMES[viseme]}"


def test_resample_changes_the_rate_and_keeps_the_timeline(neutral):
    for rate in (16000, 44100):
        out = resample(neutral, rate)
        assert out.sample_rate == rate and out.samples.dtype == np.float32
        assert abs(len(out.samples) - len(neutral.samples) * rate / neutral.sample_rate) <= 1
        assert out.phones == neutral.phones
        assert np.abs(out.samples).max() <= 1.0
        assert out.duration == pytest.approx(neutral.duration, abs=1e-3)
    assert resample(neutral, neutral.sample_rate) is neutral
