"""How many phone calls one bot process holds at once before its audio falls behind.

    python -m bench.concurrent_calls [--levels 1,2,3,4,6,8] [--seconds 20] [--keep-going] [--json]

One bot process (``python runner.py -t twilio``'s serving path: the signed webhook, our TwiML,
Pipecat's runner, the Twilio serializer, ``build_call`` with Silero VAD, memory on a real Redis)
takes N simultaneous calls. The calls come from this process, as Twilio would place them: a
signed voice webhook, then a Media Streams WebSocket fed in real time with 8 kHz µ-law frames
of 20 ms (speech from ``espeak-ng`` when it is installed, otherwise generated speech-like sound,
then silence), a keypad press where each utterance ends (the fake STT turns it into the words),
the LLM answered by the local Anthropic fake, and the fake TTS speaking audio as long as real
speech of its sentence, which goes back to the caller over the WebSocket.

The lag of an audio frame is the time from the caller sending it to the bot's pipeline taking
it (one clock for every process of the machine): the *input* lag when it reached the first
processor (the STT), the *through* lag when it reached the TTS, past the VAD and the turn
analysis. The N calls ring 0.2 s apart and are measured while all N are up. N grows through
``--levels`` (a fresh bot process each) until the input lag's p99 passes ``--limit-ms``
(20 ms). Each level also gives the bot process's CPU (of one core) and resident memory over a
warmed-up idle process, hence what one call costs, and the garbage collections that paused the
bot over 10 ms (the bot process notes them; every call's audio waits during one). The callers'
own lateness against real time is printed too (a busy machine delays them; it is not counted as
the bot's lag).
"""

from __future__ import annotations

import argparse
import asyncio
import audioop
import base64
import contextlib
import gc
import io
import itertools
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import aiohttp
import websockets
from anthropic import AsyncAnthropic
from pipecat.frames.frames import Frame, InputAudioRawFrame, TTSAudioRawFrame
from pipecat.processors.frame_processor import FrameDirection
from twilio.request_validator import RequestValidator

from bot.services import CallServices, build_llm
from bot.settings import BotSettings
from bot.text_line import SilentTTS, TextSTT
from bot.trust import ATTESTED
from cli.serve import run_bot
from memory.backend.embedded import EmbeddedRedis
from runner import bot  # noqa: F401 - the development runner calls ``__main__.bot``
from tests.fakes.anthropic_server import FakeAnthropic, Reply
from tests.fakes.text_bot import bot_env, running_bot
from tests.fakes.twilio_api import FakeTwilioAPI
from tests.support.polling import eventually

#: Where the bot process appends each call's frame times (one JSON object per call).
LAG_FILE = "BENCH_LAG_FILE"
#: Where the bot process appends each garbage collection that held it over 10 ms.
GC_FILE = "BENCH_GC_FILE"
GC_LOG = "gc.log"
SAMPLE_RATE = 8000
FRAME_BYTES = 160  # 20 ms of µ-law at 8 kHz, as Twilio sends it
FRAME_S = FRAME_BYTES / SAMPLE_RATE
ACCOUNT_SID, AUTH_TOKEN = "AC" + "0" * 32, "bench-auth-token"
PUBLIC_HOST = "voice.example.test"
REPLY = "Of course. I have booked you in for Tuesday at ten, and I will send a reminder."
SENTENCES = (
    "Hello, I would like to book an appointment for next week, please.",
    "Tuesday morning would suit me best, if you have anything then.",
    "Could you also remind me what I need to bring with me?",
    "That is perfect, thank you very much for your help.",
)
#: Seconds of speech the fake TTS makes per character (about 15 characters a second).
SPEECH_S_PER_CHAR = 0.065
#: Seconds between two calls ringing, and a call's set-up time before it is measured.
STAGGER_S = 0.2
SETTLE_S = 2.0
SETTLE_FRAMES = int(SETTLE_S / FRAME_S)
_NUMBER = "bench_frame_number"


# -- inside the bot process ----------------------------------------------------------------


@dataclass
class _FrameClock:
    """One call's audio frames: when each arrived at the STT, and when it reached the TTS.

    Times are ``time.monotonic()``, one clock for every process of the machine, so the callers
    compare them with when they sent each frame.
    """

    arrived: list[float] = field(default_factory=list)  # by frame number
    through: list[tuple[int, float]] = field(default_factory=list)  # (frame number, at the TTS)

    def record(self) -> dict[str, Any]:
        """The call's frames as JSON."""
        return {"arrived": self.arrived, "through": self.through}


class _StampingSTT(TextSTT):
    """The text STT (a keypad press says a sentence), numbering each audio frame it passes."""

    def __init__(self, *, clock: _FrameClock, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._clock = clock

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, InputAudioRawFrame):
            frame.metadata[_NUMBER] = len(self._clock.arrived)
            self._clock.arrived.append(time.monotonic())
        await super().process_frame(frame, direction)


class _SpeakingTTS(SilentTTS):
    """Speaks as long as a real voice would (silent audio), and notes each input frame's lag."""

    def __init__(self, *, clock: _FrameClock, lag_file: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._clock = clock
        self._lag_file = lag_file

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, InputAudioRawFrame) and _NUMBER in frame.metadata:
            self._clock.through.append((frame.metadata[_NUMBER], time.monotonic()))
        await super().process_frame(frame, direction)

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        await self.start_tts_usage_metrics(text)
        samples = int(len(text) * SPEECH_S_PER_CHAR * self.sample_rate)
        chunk = self.sample_rate // 5  # 200 ms, as streaming voices send it
        for offset in range(0, samples, chunk):
            yield TTSAudioRawFrame(
                audio=bytes(min(chunk, samples - offset) * 2),
                sample_rate=self.sample_rate,
                num_channels=1,
                context_id=context_id,
            )

    async def cleanup(self) -> None:
        await super().cleanup()
        with self._lag_file.open("a", encoding="utf-8") as lags:
            lags.write(json.dumps(self._clock.record()) + "\n")


def bench_services(
    settings: BotSettings, *, client: AsyncAnthropic, system_instruction: str
) -> CallServices:
    """The real LLM service between a keypad STT and a TTS speaking silence, both timing audio."""
    clock = _FrameClock()
    lag_file = Path(os.environ[LAG_FILE])
    return CallServices(
        stt=_StampingSTT(clock=clock, keypad={"1": "I would like an appointment, please."}),
        llm=build_llm(settings, client=client, system_instruction=system_instruction),
        tts=_SpeakingTTS(clock=clock, lag_file=lag_file),
    )


def _note_gc_pauses(log: Path) -> None:
    """Append ``end time, milliseconds`` of each collection pausing the process over 10 ms."""
    started = [0.0]

    def noted(phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.monotonic()
        elif (pause := time.monotonic() - started[0]) > 0.01:
            with log.open("a") as pauses:
                pauses.write(f"{time.monotonic()} {pause * 1000:.1f}\n")

    gc.callbacks.append(noted)


# -- the callers ---------------------------------------------------------------------------


def _speech() -> list[bytes]:
    """Each sentence as 8 kHz µ-law frames: espeak-ng's voice, or generated speech-like sound."""
    espeak = shutil.which("espeak-ng")
    spoken = []
    for sentence in SENTENCES:
        if espeak:
            wav = subprocess.run([espeak, "--stdout", sentence], capture_output=True, check=True)
            with wave.open(io.BytesIO(wav.stdout)) as reader:
                rate, pcm = reader.getframerate(), reader.readframes(reader.getnframes())
            pcm, _ = audioop.ratecv(pcm, 2, 1, rate, SAMPLE_RATE, None)
        else:
            pcm = _voiced(len(sentence) * SPEECH_S_PER_CHAR)
        spoken.append(audioop.lin2ulaw(pcm, 2))
    return spoken


def _voiced(seconds: float) -> bytes:
    """Speech-like sound: a gliding pitch with harmonics, four syllables a second."""
    samples = []
    for n in range(int(seconds * SAMPLE_RATE)):
        t = n / SAMPLE_RATE
        pitch = 140 + 30 * math.sin(2 * math.pi * 0.7 * t)
        syllable = max(0.0, math.sin(2 * math.pi * 4 * t)) ** 0.5
        tone = sum(math.sin(2 * math.pi * pitch * k * t) / k for k in range(1, 6))
        samples.append(int(6000 * syllable * tone))
    return b"".join(max(-32768, min(32767, s)).to_bytes(2, "little", signed=True) for s in samples)


SILENCE = b"\xff" * FRAME_BYTES


def _frames(ulaw: bytes) -> list[bytes]:
    padded = ulaw + SILENCE[: -len(ulaw) % FRAME_BYTES or 0]
    return [padded[i : i + FRAME_BYTES] for i in range(0, len(padded), FRAME_BYTES)]


def _script(speech: list[bytes], seconds: float, seed: int) -> list[bytes | str]:
    """A caller's side: an utterance, a pause, a key press (the turn), silence while the agent
    answers, again until ``seconds`` of audio; a ``str`` item is a key press."""
    pick = random.Random(seed)
    script: list[bytes | str] = [SILENCE] * pick.randrange(25, 75)
    while len(script) * FRAME_S < seconds:
        script += _frames(pick.choice(speech))
        script += [SILENCE] * 40
        script.append("1")
        script += [SILENCE] * pick.randrange(150, 250)
    return script


@dataclass
class _Caller:
    """One caller: when they sent each audio frame, how late (their own lateness), what they
    heard."""

    sent: list[float] = field(default_factory=list)
    late_ms: list[float] = field(default_factory=list)
    heard_frames: int = 0


async def _place_call(
    http: aiohttp.ClientSession, base: str, index: int, script: list[bytes | str], caller: _Caller
) -> None:
    call_sid = f"CA{index:032x}"
    form = {
        "From": f"+1415555{index:04d}",
        "To": "+14155559999",
        "CallSid": call_sid,
        "AccountSid": ACCOUNT_SID,
        "StirVerstat": ATTESTED,
    }
    signature = RequestValidator(AUTH_TOKEN).compute_signature(f"https://{PUBLIC_HOST}/", form)
    async with http.post(f"{base}/", data=form, headers={"X-Twilio-Signature": signature}) as r:
        stream = ElementTree.fromstring(await r.text()).find("./Connect/Stream")
    assert stream is not None, "the bot answered the webhook without a stream"
    parameters = {str(p.get("name")): str(p.get("value")) for p in stream.findall("Parameter")}
    stream_sid = f"MZ{index:032x}"
    async with websockets.connect(base.replace("http://", "ws://") + "/ws") as twilio:
        await twilio.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1"}))
        start = {
            "accountSid": ACCOUNT_SID,
            "callSid": call_sid,
            "streamSid": stream_sid,
            "tracks": ["inbound"],
            "customParameters": parameters,
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": SAMPLE_RATE, "channels": 1},
        }
        await twilio.send(
            json.dumps(
                {"event": "start", "sequenceNumber": "1", "start": start, "streamSid": stream_sid}
            )
        )

        async def listen() -> None:
            async for message in twilio:
                if json.loads(message).get("event") == "media":
                    caller.heard_frames += 1

        listening = asyncio.create_task(listen())
        began = time.monotonic()
        sequence = 2
        chunk = 0
        for item in script:
            if isinstance(item, str):
                dtmf = {"track": "inbound_track", "digit": item}
                message = {"event": "dtmf", "streamSid": stream_sid, "dtmf": dtmf}
            else:
                due = began + chunk * FRAME_S
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                caller.late_ms.append((time.monotonic() - due) * 1000)
                media = {
                    "track": "inbound",
                    "chunk": str(chunk + 1),
                    "timestamp": str(int(chunk * FRAME_S * 1000)),
                    "payload": base64.b64encode(item).decode(),
                }
                message = {"event": "media", "streamSid": stream_sid, "media": media}
                chunk += 1
            message["sequenceNumber"] = str(sequence)
            sequence += 1
            await twilio.send(json.dumps(message))
            if message["event"] == "media":
                caller.sent.append(time.monotonic())
        await twilio.send(json.dumps({"event": "stop", "streamSid": stream_sid}))
        listening.cancel()


# -- one level of load, and the whole run ---------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _records(lag_file: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lag_file.read_text().splitlines()]


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


@dataclass
class Level:
    """What N simultaneous calls cost one bot process, over the window all N were up."""

    calls: int
    frames: int
    input_p50_ms: float
    input_p99_ms: float
    input_max_ms: float
    through_p50_ms: float
    through_p99_ms: float
    gc_pauses: int
    gc_pause_max_ms: float
    cpu_cores: float
    rss_mb: float
    cpu_per_call_pct: float
    mb_per_call: float
    callers_late_p99_ms: float


def _lags(
    records: list[dict[str, Any]], callers: list[_Caller], window: tuple[float, float]
) -> tuple[list[float], list[float]]:
    """Each frame sent within ``window``: how long it took to reach the STT, and the TTS (ms).

    The bot's records are matched to the callers by their frames' timing: the calls rang 0.2 s
    apart, so a record's arrivals follow its own caller's sends by its lag, another's by a fifth
    of a second more.
    """
    callers = [caller for caller in callers if caller.sent]
    assert len(records) == len(callers), "a call's frames were not all recorded"

    def offset(record: dict[str, Any], caller: _Caller) -> float:
        pairs = list(zip(record["arrived"], caller.sent, strict=False))[SETTLE_FRAMES:]
        return statistics.median(abs(at - sent) for at, sent in pairs) if pairs else math.inf

    # Closest first: a record's own caller is milliseconds away, any other 0.2 s or more.
    candidates = sorted(
        (offset(record, caller), r, c)
        for r, record in enumerate(records)
        for c, caller in enumerate(callers)
    )
    pairs, used_records, used_callers = [], set(), set()
    for _, r, c in candidates:
        if r not in used_records and c not in used_callers:
            used_records.add(r)
            used_callers.add(c)
            pairs.append((records[r], callers[c]))
    to_stt: list[float] = []
    to_tts: list[float] = []
    for record, caller in pairs:
        sent, arrived = caller.sent, record["arrived"]
        to_stt += [
            (at - sent[n]) * 1000
            for n, at in enumerate(arrived[: len(sent)])
            if window[0] <= sent[n] <= window[1]
        ]
        to_tts += [
            (at - sent[n]) * 1000
            for n, at in record["through"]
            if n < len(sent) and window[0] <= sent[n] <= window[1]
        ]
    return to_stt, to_tts


async def _level(
    base: str,
    pid: int,
    calls: int,
    seconds: float,
    speech: list[bytes],
    lag_file: Path,
    idle_rss: float,
) -> Level:
    """N calls of ``seconds`` plus the ramp, ringing ``STAGGER_S`` apart; measured between the
    last one's start (plus its set-up) and the first one's end."""
    await asyncio.to_thread(lag_file.write_text, "")
    callers = [_Caller() for _ in range(calls)]
    ramp = (calls - 1) * STAGGER_S
    length = seconds + ramp + SETTLE_S
    began = time.monotonic()
    window = (began + ramp + SETTLE_S, began + length)
    usage: dict[str, float] = {}

    async def watch() -> None:
        await asyncio.sleep(max(0.0, window[0] - time.monotonic()))
        usage["cpu"], usage["rss"] = _cpu_seconds(pid), _rss_mb(pid)
        while time.monotonic() < window[1]:
            await asyncio.sleep(0.5)
            usage["rss"] = max(usage["rss"], _rss_mb(pid))
        usage["cpu"] = (_cpu_seconds(pid) - usage["cpu"]) / (window[1] - window[0])

    async def call(index: int) -> None:
        await asyncio.sleep(index * STAGGER_S)  # calls ring one after another, as they do
        script = _script(speech, length, seed=index)
        await _place_call(http, base, 1000 * calls + index, script, callers[index])

    async with aiohttp.ClientSession() as http:
        await asyncio.gather(watch(), *(call(index) for index in range(calls)))
    # Each call's TTS writes its frames when the bot has torn the call down.
    with contextlib.suppress(TimeoutError):
        await eventually(lambda: len(_records(lag_file)) >= calls, within=60)
    records = _records(lag_file)
    input_lags, through_lags = _lags(records, callers, window)
    gc_log = lag_file.with_name(GC_LOG)
    noted = gc_log.read_text().splitlines() if gc_log.exists() else []
    pauses = [
        float(ms)
        for end, ms in (line.split() for line in noted)
        if window[0] <= float(end) <= window[1]
    ]
    late = [ms for caller in callers for ms in caller.late_ms]
    return Level(
        calls=calls,
        frames=len(input_lags),
        input_p50_ms=round(_percentile(input_lags, 0.5), 2),
        input_p99_ms=round(_percentile(input_lags, 0.99), 2),
        input_max_ms=round(max(input_lags, default=float("nan")), 2),
        through_p50_ms=round(_percentile(through_lags, 0.5), 2),
        through_p99_ms=round(_percentile(through_lags, 0.99), 2),
        gc_pauses=len(pauses),
        gc_pause_max_ms=max(pauses, default=0.0),
        cpu_cores=round(usage["cpu"], 3),
        rss_mb=round(usage["rss"], 1),
        cpu_per_call_pct=round(100 * usage["cpu"] / calls, 2),
        mb_per_call=round((usage["rss"] - idle_rss) / calls, 2),
        callers_late_p99_ms=round(_percentile(late, 0.99), 2),
    )


async def measure(
    levels: Sequence[int], seconds: float, limit_ms: float, *, keep_going: bool = False
) -> list[Level]:
    """Run the levels in turn, each on a fresh bot process; stop after the first over the limit
    (``keep_going``: run them all)."""
    speech = _speech()
    with tempfile.TemporaryDirectory(prefix="rapport-bench-calls-") as folder:
        work = Path(folder)
        lag_file = work / "lags.jsonl"
        (work / "redis").mkdir()
        with EmbeddedRedis(data_dir=work / "redis") as redis_server:
            async with (
                FakeAnthropic(handler=lambda _request: Reply.text(REPLY)) as fake,
                FakeTwilioAPI() as twilio_api,
            ):
                env = bot_env(
                    redis_server.url,
                    "rapport-bench-calls",
                    fake.base_url,
                    RAPPORT_AGENT_ID="bench",
                    RAPPORT_LOG_LEVEL="WARNING",
                    RAPPORT_SILENCE_CHECK_S="0",
                    RAPPORT_IDLE_TIMEOUT_S="600",
                    TWILIO_ACCOUNT_SID=ACCOUNT_SID,
                    TWILIO_AUTH_TOKEN=AUTH_TOKEN,
                    TWILIO_API_BASE_URL=twilio_api.base_url,
                    **{LAG_FILE: str(lag_file), GC_FILE: str(lag_file.with_name(GC_LOG))},
                )
                options = ("serve", "-t", "twilio", "-x", f"https://{PUBLIC_HOST}/")
                program = Path(__file__)
                results: list[Level] = []
                for calls in levels:
                    # A fresh bot per level: memory a process keeps after its calls ended does
                    # not count against the next level's calls.
                    async with running_bot(
                        *options, env=env, folder=work, program=program
                    ) as served:
                        pid = served.process.pid
                        # One short call first: the models, the LLM client and memory load.
                        await _level(served.url, pid, 1, 3, speech, lag_file, _rss_mb(pid))
                        idle_rss = _rss_mb(pid)
                        level = await _level(
                            served.url, pid, calls, seconds, speech, lag_file, idle_rss
                        )
                    results.append(level)
                    print(_row(level), file=sys.stderr, flush=True)
                    if not level.input_p99_ms <= limit_ms and not keep_going:
                        break
                return results


_COLUMNS = (
    ("calls", "calls"),
    ("frames", "frames"),
    ("input_p50_ms", "input lag p50 ms"),
    ("input_p99_ms", "input lag p99 ms"),
    ("input_max_ms", "input lag max ms"),
    ("through_p50_ms", "through lag p50 ms"),
    ("through_p99_ms", "through lag p99 ms"),
    ("gc_pauses", "GC pauses > 10 ms"),
    ("gc_pause_max_ms", "longest GC pause ms"),
    ("cpu_cores", "CPU (cores)"),
    ("cpu_per_call_pct", "CPU/call %"),
    ("rss_mb", "RSS MB"),
    ("mb_per_call", "MB/call"),
    ("callers_late_p99_ms", "callers late p99 ms"),
)


def _row(level: Level) -> str:
    return " | ".join(str(getattr(level, name)) for name, _ in _COLUMNS)


def summary(levels: Sequence[Level], limit_ms: float) -> dict[str, Any]:
    """The figure: the most calls held within the limit, and what each costs there."""
    held = list(itertools.takewhile(lambda level: level.input_p99_ms <= limit_ms, levels))
    figure: dict[str, Any] = {
        "limit_ms": limit_ms,
        "calls_per_process": held[-1].calls if held else 0,
        "limit_passed_at": levels[len(held)].calls if len(held) < len(levels) else None,
        "speech": "espeak-ng" if shutil.which("espeak-ng") else "generated",
        "cores_on_machine": os.cpu_count(),
        # Other work on the machine delays the bot too: the 1-minute load average at the end.
        "load_average": round(os.getloadavg()[0], 2),
    }
    if held:
        best = held[-1]
        figure |= {
            "cpu_cores_at_that_load": best.cpu_cores,
            "calls_per_core": round(best.calls / max(best.cpu_cores, 1e-9), 1),
            "cpu_per_call_pct": best.cpu_per_call_pct,
            "mb_per_call": best.mb_per_call,
        }
    return figure


def main(argv: Sequence[str] | None = None) -> None:
    """Print the table (and the figure) for the levels given."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="1,2,3,4,6,8,12,16")
    parser.add_argument(
        "--seconds", type=float, default=20.0, help="seconds measured at each level"
    )
    parser.add_argument("--limit-ms", type=float, default=20.0, help="the lag p99 allowed")
    parser.add_argument(
        "--keep-going", action="store_true", help="run every level, past the limit too"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    levels = [int(n) for n in args.levels.split(",")]
    results = asyncio.run(measure(levels, args.seconds, args.limit_ms, keep_going=args.keep_going))
    figure = summary(results, args.limit_ms)
    if args.json:
        print(json.dumps({"levels": [vars(level) for level in results], **figure}, indent=2))
        return
    print("| " + " | ".join(title for _, title in _COLUMNS) + " |")
    print("|" + "---|" * len(_COLUMNS))
    for level in results:
        print(f"| {_row(level)} |")
    print()
    for name, value in figure.items():
        print(f"{name}: {value}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:  # the bot process this benchmark starts
        _note_gc_pauses(Path(os.environ[GC_FILE]))
        sys.exit(run_bot(sys.argv[2:], services=bench_services))
    main()
