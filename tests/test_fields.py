"""The business's own analysis fields: the fields file, the tool schema, validation and display.

The clinic example (``examples/clinic_fields.yaml``) is the fields file throughout: the analysis
runs through the real SDK against the strict Anthropic fake, values land on the call record in
a real Redis, and are read back through ``calls show`` / ``calls list`` and the webhook.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from redis.asyncio import Redis

from cli.main import main as cli_main
from memory.analysis.analyzer import TOOL_NAME, CallAnalyzer, analysis_client
from memory.analysis.fields import FieldType, load_fields
from memory.analysis.followups import follow_ups
from memory.analysis.settings import AnalysisSettings
from memory.analysis.webhook import signature_valid
from memory.analysis.worker import JobOutcome, analysis_worker
from memory.calls.closing import end_call
from memory.errors import ConfigurationError
from memory.models import CallRecord, Turn, now
from memory.privacy.identity import CallerIdentity, identify
from memory.store.callers import MemoryStore
from memory.store.queue import AnalysisQueue
from tests.fakes.anthropic_server import FakeAnthropic, Reply
from tests.support.analysis_answers import answer
from tests.support.call_harness import ANA, Line, caller_of, runtime_of
from tests.support.entry import Exited, in_subprocess, in_this_process
from tests.support.stored import keys_holding
from tests.support.values import API_KEY, PEPPER
from tests.support.worker import analysis_settings

ROOT = Path(__file__).resolve().parent.parent
CLINIC = ROOT / "examples" / "clinic_fields.yaml"
AGENT = "clinic"
CARD = "4111 1111 1111 1111"
WEBHOOK_SECRET = "webhook-secret-for-tests"

CLINIC_FIELDS = {
    "appointment_type": "cleaning",
    "preferred_date": "2031-03-14",
    "preferred_time": "15:30",
    "new_patient": True,
    "insurance_provider": "Delta Dental",
    "symptoms": ["sensitive tooth", "bleeding gums"],
    "party_size": 2,
}


def clinic_answer(**fields: Any) -> dict[str, Any]:
    """An analysis answer whose business fields are the clinic's, some replaced."""
    return answer(action="book_appointment", facts=[], fields=CLINIC_FIELDS | fields)


def patient(number: str = "+1 415 555 0142") -> CallerIdentity:
    identity = identify(number, agent_id=AGENT, pepper=PEPPER.encode())
    assert identity is not None
    return identity


@pytest.fixture
async def analyzer(fake: FakeAnthropic) -> AsyncIterator[CallAnalyzer]:
    client = analysis_client(api_key=API_KEY, base_url=fake.base_url, timeout=10.0)
    async with client:
        yield CallAnalyzer(client=client, model="claude-haiku-4-5", fields=load_fields(CLINIC))


def settings_for(fake: FakeAnthropic, **extra: Any) -> AnalysisSettings:
    return analysis_settings(fake, fields_file=CLINIC, backoff_max=0.05, **extra)


async def analyse_one(
    store: MemoryStore, queue: AnalysisQueue, fake: FakeAnthropic, who: CallerIdentity, call_id: str
) -> None:
    """A short call of ``who`` hung up and analysed by a worker built as production builds it."""
    await store.append_turn(who, Turn(role="user", text="A cleaning please.", call_id=call_id))
    record = CallRecord(call_id=call_id, agent_id=AGENT, ended_at=now(), ended_reason="hangup")
    assert await end_call(store, queue, who, record)
    async with analysis_worker(store, queue, settings_for(fake)) as worker:
        job = await worker.next_job()
        assert job is not None
        assert await worker.process(job) == JobOutcome.ANALYSED


def run_cli(monkeypatch: pytest.MonkeyPatch, redis_url: str, key_prefix: str) -> None:
    """Point the in-process command line at the test's Redis, prefix and fields file."""
    for name, value in {
        "REDIS_URL": redis_url,
        "RAPPORT_PEPPER": PEPPER,
        "RAPPORT_KEY_PREFIX": key_prefix,
        "RAPPORT_ANALYSIS_FIELDS": str(CLINIC),
    }.items():
        monkeypatch.setenv(name, value)
    # No folded cells. Rich reads COLUMNS at each print; setting the console's width instead
    # would leave it pinned after the test (undoing sets the width it had then, for good).
    monkeypatch.setenv("COLUMNS", "220")


async def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """``runner.py ARGS`` through ``cli.main`` (in a thread: it runs its own event loop)."""
    capsys.readouterr()
    code = await asyncio.to_thread(cli_main, list(args))
    return code, capsys.readouterr().out


# -- the fields file -----------------------------------------------------------------------------


def test_the_clinic_file_defines_each_type() -> None:
    fields = load_fields(CLINIC)
    assert {d.name: d.type for d in fields} == {
        "appointment_type": FieldType.ONE_OF,
        "preferred_date": FieldType.DATE,
        "preferred_time": FieldType.TIME,
        "new_patient": FieldType.BOOLEAN,
        "insurance_provider": FieldType.TEXT,
        "symptoms": FieldType.LIST_OF_TEXT,
        "party_size": FieldType.NUMBER,
    }
    appointment = fields.get("appointment_type")
    assert appointment is not None and appointment.required
    assert appointment.options == ("cleaning", "checkup", "emergency")
    assert {d.name for d in fields if d.personal} == {"insurance_provider", "symptoms"}


def test_json_and_natural_type_names_load_too(tmp_path: Path) -> None:
    path = tmp_path / "fields.json"
    path.write_text(
        json.dumps(
            {
                "fields": [
                    {
                        "name": "size",
                        "description": "Cake size.",
                        "type": "one of",
                        "options": ["small", "large"],
                    },
                    {"name": "toppings", "description": "Toppings.", "type": "list of text"},
                ]
            }
        )
    )
    assert [d.type for d in load_fields(path)] == [FieldType.ONE_OF, FieldType.LIST_OF_TEXT]


BAD_FILES = {
    "unknown type": (
        "fields:\n  - {name: colour, description: Paint colour., type: colour}\n",
        "field 1 ('colour'): type: unknown type 'colour' (types: text, number, boolean, date, "
        "time, one_of, list_of_text)",
    ),
    "duplicate name": (
        "fields:\n  - {name: size, description: A., type: text}\n"
        "  - {name: size, description: B., type: number}\n",
        "duplicate field name 'size'",
    ),
    "name of Rapport's own": (
        "fields:\n  - {name: urgency, description: How urgent., type: number}\n",
        "field name 'urgency' clashes with one of Rapport's own",
    ),
    "bad YAML": (
        "fields:\n  - name: size\n     description: [unclosed\n",
        "is not valid YAML (line 3, column 17",
    ),
    "missing description": (
        "fields:\n  - {name: size, type: text}\n",
        "field 1 ('size'): description: Field required",
    ),
    "one_of without options": (
        "fields:\n  - {name: size, description: Cake size., type: one_of}\n",
        "field 1 ('size'): a one_of field needs a list of options",
    ),
}


@pytest.mark.parametrize(("content", "named"), BAD_FILES.values(), ids=BAD_FILES.keys())
def test_a_bad_fields_file_is_one_line_naming_the_problem(
    tmp_path: Path, content: str, named: str
) -> None:
    path = tmp_path / "fields.yaml"
    path.write_text(content)
    with pytest.raises(ConfigurationError) as error:
        load_fields(path)
    message = str(error.value)
    assert message.startswith(f"RAPPORT_ANALYSIS_FIELDS ({path})")
    assert named in message and "\n" not in message


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ("- {name: a, description: A., type: text}\n", "must hold a 'fields' list"),
        ("fields:\n  - {name: Size!, description: A., type: text}\n", "name: String should match"),
        ("fields:\n  - {name: a, description: A., type: text, requried: true}\n", "requried"),
        ("fields:\n  - {name: a, description: A., type: text, options: [x]}\n", "only for one_of"),
    ],
)
def test_other_mistakes_are_named_too(tmp_path: Path, content: str, named: str) -> None:
    path = tmp_path / "fields.yaml"
    path.write_text(content)
    with pytest.raises(ConfigurationError, match=named):
        load_fields(path)
    with pytest.raises(ConfigurationError, match="cannot be read"):
        load_fields(tmp_path / "missing.yaml")


def start(tmp_path: Path, content: str, *command: str, subprocess: bool = False) -> Exited:
    """``python runner.py COMMAND`` from an empty folder, with the fields file ``content``
    (in a process of its own with ``subprocess``, else the same entry in this one)."""
    path = tmp_path / "fields.yaml"
    path.write_text(content)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "RAPPORT_DATA_DIR": str(tmp_path / "data"),
        "RAPPORT_ANALYSIS_FIELDS": str(path),
        **dict.fromkeys(
            ("DEEPGRAM_API_KEY", "ANTHROPIC_API_KEY", "AZURE_SPEECH_KEY", "AZURE_SPEECH_REGION"),
            "dummy",
        ),
    }
    # cwd: no .env there.
    return (in_subprocess if subprocess else in_this_process)(tmp_path, command, env)


#: Every kind of bad file for the bot; two for the standalone worker (the same check). One of
#: each runs as a real process; the others run the same entry in the test process.
STARTS = [
    *(
        pytest.param(kind, (), "rapport: ", kind == "bad YAML", id=f"bot-{kind}")
        for kind in BAD_FILES
    ),
    *(
        pytest.param(kind, ("worker",), "rapport worker: ", kind == "bad YAML", id=f"worker-{kind}")
        for kind in ("unknown type", "bad YAML")
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "command", "prefix", "subprocess"), STARTS)
def test_the_bot_and_the_worker_refuse_to_start_with_a_bad_fields_file(
    tmp_path: Path, kind: str, command: tuple[str, ...], prefix: str, subprocess: bool
) -> None:
    content, named = BAD_FILES[kind]
    result = start(tmp_path, content, *command, subprocess=subprocess)
    assert result.code == 2
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"{prefix}RAPPORT_ANALYSIS_FIELDS (") and named in line


# -- the analysis ---------------------------------------------------------------------------------


async def test_the_tool_schema_is_accepted_and_carries_each_description(
    fake: FakeAnthropic, analyzer: CallAnalyzer
) -> None:
    fake.script(Reply.tool_call(TOOL_NAME, clinic_answer()))
    await analyzer.analyse(transcript=[Turn(role="user", text="Hi")], existing_facts=[])

    [request] = fake.requests  # the strict fake refused nothing (checked after every test)
    [tool] = request.body["tools"]
    schema = tool["input_schema"]
    assert schema["type"] == "object" and "fields" in schema["required"]
    assert "dropped_fields" not in schema["properties"]
    own = schema["properties"]["fields"]
    assert own["type"] == "object" and own["required"] == ["appointment_type"]
    for definition in load_fields(CLINIC):
        prop = own["properties"][definition.name]
        assert definition.description in prop["description"]
        assert prop["type"][-1] == "null"
    assert own["properties"]["appointment_type"]["enum"] == [
        "cleaning",
        "checkup",
        "emergency",
        None,
    ]
    assert own["properties"]["symptoms"]["items"] == {"type": "string"}
    assert "the business's own fields" in request.system_text


async def test_without_a_fields_file_the_schema_is_rapport_s_own(fake: FakeAnthropic) -> None:
    async with analysis_client(api_key=API_KEY, base_url=fake.base_url) as client:
        plain = CallAnalyzer(client=client, model="claude-haiku-4-5")
        fake.script(Reply.tool_call(TOOL_NAME, clinic_answer()))
        analysis = await plain.analyse(transcript=[Turn(role="user", text="Hi")], existing_facts=[])
    properties = fake.requests[0].body["tools"][0]["input_schema"]["properties"]
    assert "fields" not in properties and "dropped_fields" not in properties
    assert "own fields" not in fake.requests[0].system_text
    assert analysis.fields == {} and analysis.dropped_fields == {}


async def test_values_are_typed_wrong_ones_dropped_with_a_reason_and_text_scrubbed(
    fake: FakeAnthropic, analyzer: CallAnalyzer
) -> None:
    fake.script(
        Reply.tool_call(
            TOOL_NAME,
            clinic_answer(
                new_patient="yes",  # not a boolean
                preferred_time="3pm",  # not HH:MM
                party_size="two",  # not a number
                insurance_provider=f"Delta Dental, card {CARD}",
                symptoms=["sensitive tooth", f"paid with {CARD}"],
                invented_field="ignored",
            ),
        )
    )
    analysis = await analyzer.analyse(transcript=[Turn(role="user", text="Hi")], existing_facts=[])

    assert analysis.fields == {
        "appointment_type": "cleaning",
        "preferred_date": "2031-03-14",
        "insurance_provider": "Delta Dental, card [card]",
        "symptoms": ["sensitive tooth", "paid with [card]"],
    }
    assert analysis.dropped_fields == {
        "new_patient": "not true or false",
        "preferred_time": "not a time (24-hour HH:MM)",
        "party_size": "not a number",
    }
    assert analysis.summary and analysis.action == "book_appointment"  # the rest stands


async def test_a_required_field_left_out_or_a_card_as_number_is_dropped_not_the_analysis(
    fake: FakeAnthropic, analyzer: CallAnalyzer
) -> None:
    fields = {"party_size": int(CARD.replace(" ", "")), "symptoms": []}
    fake.script(Reply.tool_call(TOOL_NAME, answer(fields=fields)))
    analysis = await analyzer.analyse(transcript=[Turn(role="user", text="Hi")], existing_facts=[])
    assert analysis.fields == {}
    assert analysis.dropped_fields == {
        "appointment_type": "required but not given",
        "party_size": "it looked like a card, account or id number",
    }
    # A required field answered null: the call was not about it, nothing is wrong.
    fake.script(Reply.tool_call(TOOL_NAME, answer(fields={"appointment_type": None})))
    analysis = await analyzer.analyse(transcript=[Turn(role="user", text="Hi")], existing_facts=[])
    assert analysis.fields == {} and analysis.dropped_fields == {}
    # Not even an object: noted once, the analysis still stands.
    fake.script(Reply.tool_call(TOOL_NAME, answer(fields="cleaning")))
    analysis = await analyzer.analyse(transcript=[Turn(role="user", text="Hi")], existing_facts=[])
    assert analysis.dropped_fields == {"fields": "the answer's fields were not an object"}


# -- a call end to end ----------------------------------------------------------------------------


async def test_a_call_s_fields_are_stored_typed_and_shown(
    line: Line,
    redis_url: str,
    key_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake = line.fake
    fake.script(Reply.text("Of course, a cleaning on the fourteenth at half past three."))
    async with line.call(ANA, "call-1", agent=AGENT) as call:
        await call.say(
            f"I'd like a cleaning on March 14 at 3:30. I'm with Delta Dental, card {CARD}.",
            replies=1,
        )
        await call.end()
    assert line.memory is not None
    fake.script(
        Reply.tool_call(
            TOOL_NAME,
            clinic_answer(insurance_provider=f"Delta Dental (card {CARD})", new_patient="yes"),
        )
    )
    store = runtime_of(line).store
    async with analysis_worker(store, line.memory.queue, settings_for(fake)) as worker:
        job = await worker.next_job()
        assert job is not None
        assert await worker.process(job) == JobOutcome.ANALYSED

    record = await store.get_call(caller_of(line, ANA, AGENT), "call-1")
    assert record is not None and record.analysis is not None
    stored = record.analysis.fields
    assert stored == {
        "appointment_type": "cleaning",
        "preferred_date": "2031-03-14",
        "preferred_time": "15:30",
        "insurance_provider": "Delta Dental (card [card])",
        "symptoms": ["sensitive tooth", "bleeding gums"],
        "party_size": 2,
    }
    assert type(stored["party_size"]) is int and isinstance(stored["symptoms"], list)
    assert record.analysis.dropped_fields == {"new_patient": "not true or false"}

    run_cli(monkeypatch, redis_url, key_prefix)
    code, shown = await cli(capsys, "calls", "show", "call-1", "--agent", AGENT)
    assert code == 0
    rows = [" ".join(line.strip("│ ").split()) for line in shown.splitlines()]
    assert "appointment_type │ cleaning" in rows
    assert "preferred_time │ 15:30" in rows
    assert "symptoms │ sensitive tooth; bleeding gums" in rows
    assert "insurance_provider │ Delta Dental (card [card])" in rows
    assert "new_patient │ (dropped: not true or false)" in rows
    assert CARD not in shown and CARD.replace(" ", "") not in shown


async def test_the_follow_up_list_filters_by_a_field_and_shows_chosen_columns(
    store: MemoryStore,
    queue: AnalysisQueue,
    fake: FakeAnthropic,
    redis_url: str,
    key_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake.script(
        Reply.tool_call(TOOL_NAME, clinic_answer()),
        Reply.tool_call(TOOL_NAME, clinic_answer(appointment_type="emergency", new_patient=False)),
    )
    await analyse_one(store, queue, fake, patient("+1 415 555 0142"), "call-cleaning")
    await analyse_one(store, queue, fake, patient("+1 415 555 0143"), "call-emergency")
    since = now() - 3600
    cleanings = await follow_ups(store, AGENT, since=since, fields={"appointment_type": "Cleaning"})
    assert [r.call_id for r in cleanings] == ["call-cleaning"]
    returning = await follow_ups(store, AGENT, since=since, fields={"new_patient": "no"})
    assert [r.call_id for r in returning] == ["call-emergency"]
    both = await follow_ups(store, AGENT, since=since, fields={"symptoms": "bleeding gums"})
    assert {r.call_id for r in both} == {"call-cleaning", "call-emergency"}

    run_cli(monkeypatch, redis_url, key_prefix)
    code, listed = await cli(
        capsys,
        "calls", "list", "--agent", AGENT,
        "--field", "appointment_type=cleaning",
        "--columns", "appointment_type,preferred_time,new_patient",
    )  # fmt: skip
    assert code == 0
    assert "call-cleaning" in listed and "call-emergency" not in listed
    header = next(line for line in listed.splitlines() if "urgency" in line)
    assert "appointment_type" in header and "preferred_time" in header
    row = next(line for line in listed.splitlines() if "call-cleaning" in line)
    assert "cleaning" in row and "15:30" in row and "yes" in row
    code, _ = await cli(capsys, "calls", "list", "--agent", AGENT, "--columns", "colour")
    assert code == 2
    code, _ = await cli(capsys, "calls", "list", "--agent", AGENT, "--field", "appointment_type")
    assert code == 2


async def test_the_webhook_payload_carries_the_fields(
    store: MemoryStore, queue: AnalysisQueue, fake: FakeAnthropic
) -> None:
    received: list[dict[str, Any]] = []

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        assert signature_valid(body, request.headers["X-Rapport-Signature"], WEBHOOK_SECRET)
        received.append(json.loads(body))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        fake.script(Reply.tool_call(TOOL_NAME, clinic_answer(party_size="two")))
        who = patient()
        await store.append_turn(who, Turn(role="user", text="A cleaning.", call_id="call-hook"))
        record = CallRecord(call_id="call-hook", agent_id=AGENT, ended_at=now())
        assert await end_call(store, queue, who, record)
        settings = settings_for(
            fake,
            webhook_url=f"http://127.0.0.1:{port}/hook",
            webhook_secret=WEBHOOK_SECRET,
        )
        async with analysis_worker(store, queue, settings) as worker:
            job = await worker.next_job()
            assert job is not None
            assert await worker.process(job) == JobOutcome.ANALYSED
    finally:
        await runner.cleanup()
    [payload] = received
    assert payload["analysis"]["fields"] == {
        name: value for name, value in CLINIC_FIELDS.items() if name != "party_size"
    }
    assert payload["analysis"]["dropped_fields"] == {"party_size": "not a number"}


# -- privacy --------------------------------------------------------------------------------------


async def test_forget_removes_personal_values_and_no_index_holds_them(
    store: MemoryStore, queue: AnalysisQueue, fake: FakeAnthropic, redis_client: Redis,
    key_prefix: str,
) -> None:  # fmt: skip
    personal = {"insurance_provider": "Zyxwv Mutual", "symptoms": ["qwerty ache"]}
    fake.script(Reply.tool_call(TOOL_NAME, clinic_answer(**personal)))
    who = patient()
    await analyse_one(store, queue, fake, who, "call-private")
    held = await keys_holding(redis_client, key_prefix, ("Zyxwv Mutual", "qwerty ache"))
    assert held, "the values were stored"
    # Only the caller's own call record, under the caller's hash tag and TTL.
    assert held == {store.key_for(who, "call:call-private").encode()}
    assert 0 < await redis_client.ttl(next(iter(held))) <= store.ttl_seconds

    await store.forget(who)

    assert await keys_holding(redis_client, key_prefix, ("Zyxwv Mutual", "qwerty ache")) == set()
    assert await follow_ups(store, AGENT, since=0) == []
