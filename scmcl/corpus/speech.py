"""Speech synthesis with a phoneme timeline, through the espeak-ng C library (via ctypes).

The library and its data come from the ``espeakng-loader`` wheel (libespeak-ng 1.52), so no
system package is needed. Initialised with phoneme events, espeak reports every phoneme with its
start in milliseconds of the generated audio: that timeline drives the synthetic mouth.

What espeak emits for English (and how it becomes ``Speech.phones``):

- one event per phoneme, named by espeak's ASCII mnemonic (``D``, ``@2``, ``k``, ``dZ``, ...),
  stressed vowels prefixed with ``'`` (primary) or ``,`` (secondary);
- no event for the ~10 ms of silence before the first phoneme: a ``"_"`` phone is added there;
- ``_:`` for a pause (clause or sentence end), usually followed by a zero-length ``_``; such runs
  of pause mnemonics are merged into one phone named after the first (so the clip ends on ``_:``);
- ``;``, a voiced linking glide (~40-75 ms, a [j]) after an i-vowel before another vowel
  ("the old" = ``D I2 ; 'oU``): it is sound, not a pause.

espeak keeps synthesis state between utterances (wavegen's pitch flutter, gain control, ...),
so in one process the same request gives audio and phoneme times that drift by up to ~10 ms
with what was said before. The corpus re-synthesises a clip for its paired ground truth and
needs the same timing, so every utterance is synthesised in a fresh fork of a helper process
that has initialised the library once and never spoken: output depends only on the request
(POSIX only; ~10 ms per sentence, plus ~0.1 s once per process to start the helper).
"""

from __future__ import annotations

import atexit
import ctypes
import os
import pickle
import subprocess
import sys
import threading
from dataclasses import dataclass
from math import gcd
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

import numpy as np

INSTALL_HINT = "install it with `pip install espeakng-loader==0.2.4` (it ships libespeak-ng and its data)"

# speak_lib.h constants.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS = 0x0001
_INIT_DONT_EXIT = 0x8000  # return an error instead of exit() when the data is missing
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_RATE, _VOLUME, _PITCH, _RANGE = 1, 2, 3, 4
_EE_OK = 0
_RATE_LIMITS = (80, 450)  # words/min, the range speak_lib.h documents


class EspeakUnavailable(RuntimeError):
    """The espeak-ng library or its data cannot be loaded."""


@dataclass(frozen=True)
class Voice:
    """An actor's voice: espeak voice, optional variant (``"m3"``, ``"f2"``), pitch/range 0-100, words/min."""

    name: str = "en-us"
    espeak_variant: str | None = None
    pitch: int = 50
    range: int = 50
    rate: int = 175


@dataclass(frozen=True)
class Prosody:
    """Per-emotion prosody on top of the actor's voice: it changes timing and melody, not phonemes."""

    rate_scale: float = 1.0
    pitch_shift: int = 0
    range_scale: float = 1.0
    volume: int = 100


NEUTRAL = Prosody()


@dataclass(frozen=True)
class Phone:
    """One phoneme (espeak mnemonic) over [start, end) seconds of the audio."""

    phoneme: str
    start: float
    end: float


@dataclass
class Speech:
    """Mono float32 audio in [-1, 1] and its phoneme timeline, which covers it end to end."""

    samples: np.ndarray
    sample_rate: int
    phones: list[Phone]

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate


@dataclass(frozen=True)
class _Request:
    """What the helper needs for one utterance (plain values: it crosses a pipe)."""

    text: str
    voice: str
    variant: str | None
    params: tuple[tuple[int, int], ...]  # (espeak parameter, value)


# ---------------------------------------------------------------------------------------------
# The C library (used inside the helper process only)


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    """``espeak_EVENT`` of speak_lib.h (40 bytes on 64-bit)."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # ms from the start of this utterance
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


def _load_library() -> tuple[ctypes.CDLL, str]:
    """The bundled libespeak-ng and its data directory, or one actionable error line."""
    try:
        import espeakng_loader

        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        data = espeakng_loader.get_data_path()
    except (ImportError, OSError, RuntimeError) as err:
        raise EspeakUnavailable(f"espeak-ng is unavailable ({err}); {INSTALL_HINT}") from None
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                 ctypes.c_uint, ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p]
    return lib, data


class _Engine:
    """An initialised espeak-ng collecting audio and phoneme events through its callback."""

    def __init__(self) -> None:
        self.lib, self.data = _load_library()
        self.sample_rate = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, self.data.encode(),
                                                      _INIT_PHONEME_EVENTS | _INIT_DONT_EXIT)
        if self.sample_rate <= 0:
            raise EspeakUnavailable(f"espeak-ng failed to initialise with data {self.data}; {INSTALL_HINT}")
        self.audio = bytearray()
        self.events: list[tuple[int, str]] = []
        self.callback = _SynthCallback(self._collect)  # referenced here so ctypes keeps it alive
        self.lib.espeak_SetSynthCallback(self.callback)

    def _collect(self, wav: Any, n_samples: int, events: Any) -> int:
        if wav and n_samples > 0:
            self.audio += ctypes.string_at(wav, 2 * n_samples)
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            if events[i].type == _EVENT_PHONEME:
                self.events.append((events[i].audio_position, events[i].id.string.decode("utf-8", "replace")))
            i += 1
        return 0

    def _set_voice(self, name: str, variant: str | None) -> None:
        if variant is not None and not (Path(self.data) / "voices" / "!v" / variant).is_file():
            raise ValueError(f"espeak-ng has no voice variant {variant!r}")
        full = name if variant is None else f"{name}+{variant}"
        if self.lib.espeak_SetVoiceByName(full.encode()) != _EE_OK:
            raise ValueError(f"espeak-ng has no voice {name!r}")

    def speak(self, request: _Request) -> tuple[bytes, list[tuple[int, str]]]:
        """16-bit native-endian samples and (ms, mnemonic) phoneme events of one utterance."""
        self._set_voice(request.voice, request.variant)
        for parameter, value in request.params:
            self.lib.espeak_SetParameter(parameter, value, 0)
        text = request.text.encode("utf-8")
        status = self.lib.espeak_Synth(text, len(text) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if status != _EE_OK:
            raise RuntimeError(f"espeak_Synth failed with status {status}")
        self.lib.espeak_Synchronize()
        return bytes(self.audio), list(self.events)


# ---------------------------------------------------------------------------------------------
# The helper process: one initialised engine, one fork per utterance


def _send(fd: int, message: tuple[str, Any]) -> None:
    data = memoryview(pickle.dumps(message))
    while data:
        data = data[os.write(fd, data):]


def _answer(engine: _Engine, request: _Request, fd: int) -> NoReturn:
    """Runs in a forked child: speak from the pristine state, report, exit without cleanup."""
    code = 1  # anything unexpected (even an unpicklable answer) ends as a failure the helper reports
    try:
        try:
            message: tuple[str, Any] = ("ok", engine.speak(request))
        except (ValueError, RuntimeError) as err:
            message = ("error", err)
        _send(fd, message)
        code = 0
    finally:
        os._exit(code)


def _serve() -> None:
    """Helper main loop: requests arrive pickled on stdin, answers leave pickled on the old stdout."""
    out = os.dup(1)
    os.dup2(2, 1)  # stray prints (Python or C) must not corrupt the answer stream
    sys.stdout = sys.stderr
    try:
        engine = _Engine()
    except EspeakUnavailable as err:
        _send(out, ("error", err))
        return
    _send(out, ("ok", engine.sample_rate))
    while True:
        try:
            request = pickle.load(sys.stdin.buffer)
        except EOFError:
            return
        pid = os.fork()
        if pid == 0:
            _answer(engine, request, out)
        _, status = os.waitpid(pid, 0)
        if status != 0:
            _send(out, ("error", RuntimeError(f"espeak-ng failed (wait status {status}) on {request.text!r}")))


class _Helper:
    """The parent's handle on a running helper process."""

    def __init__(self) -> None:
        root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
                   PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
        self.owner = os.getpid()
        self.process = subprocess.Popen([sys.executable, "-c", "from scmcl.corpus.speech import _serve; _serve()"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        try:
            self.sample_rate: int = self._receive()
        except EspeakUnavailable:
            self.process.communicate()  # reap it and close the pipes
            raise
        atexit.register(self.close)

    def close(self) -> None:
        """End the helper: it exits when its stdin closes."""
        if self.owner == os.getpid() and self.process.poll() is None:
            self.process.communicate()

    def _receive(self) -> Any:
        stream: BinaryIO = self.process.stdout  # type: ignore[assignment]
        try:
            status, payload = pickle.load(stream)
        except EOFError:
            raise EspeakUnavailable(f"the espeak-ng helper process exited (code {self.process.wait()}); "
                                    f"{INSTALL_HINT}") from None
        if status == "error":
            raise payload
        return payload

    def speak(self, request: _Request) -> tuple[bytes, list[tuple[int, str]]]:
        stdin: BinaryIO = self.process.stdin  # type: ignore[assignment]
        pickle.dump(request, stdin)
        stdin.flush()
        return self._receive()


_lock = threading.Lock()
_helper: _Helper | None = None


def _speak(request: _Request) -> tuple[int, bytes, list[tuple[int, str]]]:
    """Run one request in the (lazily started, per-process) helper."""
    global _helper
    with _lock:
        if _helper is None or _helper.owner != os.getpid() or _helper.process.poll() is not None:
            _helper = _Helper()
        audio, events = _helper.speak(request)
        return _helper.sample_rate, audio, events


# ---------------------------------------------------------------------------------------------
# Public API


def _parameters(voice: Voice, prosody: Prosody) -> tuple[tuple[int, int], ...]:
    """espeak parameters of a voice spoken with a prosody, clipped to espeak's ranges."""
    rate = int(np.clip(round(voice.rate * prosody.rate_scale), *_RATE_LIMITS))
    pitch = int(np.clip(voice.pitch + prosody.pitch_shift, 0, 100))
    pitch_range = int(np.clip(round(voice.range * prosody.range_scale), 0, 100))
    volume = int(np.clip(prosody.volume, 0, 200))
    return (_RATE, rate), (_PITCH, pitch), (_RANGE, pitch_range), (_VOLUME, volume)


def _is_pause(mnemonic: str) -> bool:
    return mnemonic.startswith("_")


def _timeline(events: list[tuple[int, str]], duration: float) -> list[Phone]:
    """Contiguous phones from (ms, mnemonic) events: leading silence added, pause runs merged."""
    starts: list[tuple[float, str]] = []
    for ms, mnemonic in events:
        start = min(max(ms / 1000.0, starts[-1][0] if starts else 0.0), duration)
        if not (starts and _is_pause(mnemonic) and _is_pause(starts[-1][1])):
            starts.append((start, mnemonic))
    if not starts or starts[0][0] > 0.0:
        starts.insert(0, (0.0, "_"))
    ends = [start for start, _ in starts[1:]] + [duration]
    return [Phone(mnemonic, start, end) for (start, mnemonic), end in zip(starts, ends)]


def synthesize(text: str, voice: Voice, prosody: Prosody = NEUTRAL) -> Speech:
    """Speak ``text`` in ``voice`` with ``prosody``; the result depends only on the arguments."""
    request = _Request(text, voice.name, voice.espeak_variant, _parameters(voice, prosody))
    sample_rate, audio, events = _speak(request)
    samples = np.frombuffer(audio, dtype=np.int16).astype(np.float32) / 32768.0
    return Speech(samples, sample_rate, _timeline(events, len(samples) / sample_rate))


def resample(speech: Speech, sample_rate: int) -> Speech:
    """The same speech at another sample rate (polyphase filter); phone times are unchanged."""
    if sample_rate == speech.sample_rate:
        return speech
    from scipy.signal import resample_poly  # slow import, and the helper process never needs it

    divisor = gcd(sample_rate, speech.sample_rate)
    samples = resample_poly(speech.samples, sample_rate // divisor, speech.sample_rate // divisor)
    return Speech(np.clip(samples, -1.0, 1.0).astype(np.float32), sample_rate, list(speech.phones))
