"""The bot's small pieces: who is calling, our TwiML, masked logs, services, the prompt."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from xml.etree import ElementTree

import pytest
from anthropic import AsyncAnthropic
from loguru import logger
from pipecat.runner.types import (
    CallData,
    DailyRunnerArguments,
    RunnerArguments,
    SmallWebRTCRunnerArguments,
    WebSocketRunnerArguments,
)

from bot.identify import identify_call, serves_on_loopback
from bot.services import build_services
from bot.settings import BotSettings, public_host
from bot.twilio import twiml
from bot.wording import opening_line, prompt_template, with_hours
from cli.logs import install_redaction, mask_numbers
from memory.errors import ConfigurationError
from memory.models import CallerMemory, CallerProfile, CallTrust
from tests.support.values import service_settings

NUMBER = "+14155550123"


def webrtc(
    body: dict[str, object], caller_flag: str | None = None, host: str = "localhost"
) -> SmallWebRTCRunnerArguments:
    args = SmallWebRTCRunnerArguments(webrtc_connection=None, body=body, session_id="s-1")
    args.cli_args = argparse.Namespace(caller=caller_flag, host=host)
    return args


def test_webrtc_caller_comes_from_the_start_body_then_the_flag() -> None:
    assert identify_call(webrtc({"caller": NUMBER}, "+34600111222")).caller == NUMBER
    origin = identify_call(webrtc({}, "+34600111222"))
    assert (origin.transport, origin.caller, origin.call_id) == ("webrtc", "+34600111222", "s-1")
    assert origin.trust == CallTrust.VERIFIED  # the developer's own room
    assert identify_call(webrtc({})).caller is None
    assert identify_call(webrtc({})).trust == CallTrust.ANONYMOUS


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("127.0.0.1", True),
        ("::1", True),
        ("0.0.0.0", False),
        ("10.0.0.5", False),
    ],
)
def test_the_local_room_names_its_caller_only_on_loopback(host: str, loopback: bool) -> None:
    args = webrtc({"caller": NUMBER}, host=host)
    assert serves_on_loopback(args) is loopback
    origin = identify_call(args, room_callers=serves_on_loopback(args))
    assert origin.caller == (NUMBER if loopback else None)
    assert identify_call(args, room_callers=True).caller == NUMBER  # RAPPORT_TEST_ROOM=true


def test_daily_dial_in_caller_comes_from_the_dial_in_settings() -> None:
    body = {
        "dialin_settings": {"call_id": "c-9", "call_domain": "d", "From": NUMBER, "To": "+1"},
        "daily_api_key": "k",
        "daily_api_url": "https://api.daily.co/v1",
    }
    origin = identify_call(DailyRunnerArguments(room_url="https://x.daily.co/r", body=body))
    assert (origin.transport, origin.caller, origin.call_id) == ("daily", NUMBER, "c-9")
    assert origin.trust == CallTrust.UNVERIFIED  # an unsigned webhook proves nothing
    plain = identify_call(DailyRunnerArguments(room_url="https://x.daily.co/r", body={}))
    assert plain.caller is None


@pytest.mark.parametrize(
    ("headers", "signed", "trust"),
    [
        ({"From": f"<sip:{NUMBER}@x;verstat=TN-Validation-Passed-A>"}, True, CallTrust.VERIFIED),
        (
            {"P-Asserted-Identity": f"<tel:{NUMBER};verstat=TN-Validation-Passed-A>"},
            True,
            CallTrust.VERIFIED,
        ),
        ({"From": f"<sip:{NUMBER}@x;verstat=TN-Validation-Passed-B>"}, True, CallTrust.UNVERIFIED),
        ({"From": f"<sip:{NUMBER}@x;verstat=TN-Validation-Passed-A>"}, False, CallTrust.UNVERIFIED),
        ({}, True, CallTrust.UNVERIFIED),
    ],
)
def test_a_daily_caller_is_verified_only_by_a_signed_attestation(
    headers: dict[str, str], signed: bool, trust: CallTrust
) -> None:
    body = {"dialin_settings": {"call_id": "c-9", "From": NUMBER, "sip_headers": headers}}
    args = DailyRunnerArguments(room_url="https://x.daily.co/r", body=body)
    assert identify_call(args, dialin_signed=signed).trust == trust


def test_twilio_caller_comes_from_the_stream_parameters() -> None:
    call_data = CallData(call_id="CA1", stream_id="MZ1", from_number=NUMBER, body={})
    args = WebSocketRunnerArguments(websocket=None)
    origin = identify_call(args, telephony=("twilio", call_data))
    assert (origin.transport, origin.caller, origin.call_id) == ("twilio", NUMBER, "CA1")
    assert origin.trust == CallTrust.UNVERIFIED
    attested = identify_call(args, telephony=("twilio", call_data), stream_trust=CallTrust.VERIFIED)
    assert attested.trust == CallTrust.VERIFIED
    assert identify_call(args, telephony=("plivo", call_data)).caller is None


def test_anything_else_is_anonymous_and_reprs_hide_the_number() -> None:
    assert identify_call(RunnerArguments()).caller is None
    assert NUMBER not in repr(identify_call(webrtc({"caller": NUMBER})))


def test_twiml_escapes_what_the_carrier_sent() -> None:
    parameters = {"from_number": '"><Hangup/>', "to_number": "+34600111222"}
    xml = twiml(stream_url="wss://h/ws", parameters=parameters)
    stream = ElementTree.fromstring(xml).find("./Connect/Stream")
    assert stream is not None and stream.find("Hangup") is None
    values = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    assert values == {"from_number": '"><Hangup/>', "to_number": "+34600111222"}


@pytest.mark.parametrize("written", [NUMBER, "+1 (415) 555-0123", "%2B14155550123"])
def test_numbers_are_masked_in_every_log_message(written: str) -> None:
    assert mask_numbers(f"Data: {{'from': '{written}'}}") == "Data: {'from': '+1•••23'}"
    messages: list[str] = []
    install_redaction()
    sink = logger.add(lambda message: messages.append(message.record["message"]))
    try:
        logger.debug("Parsed - Data: {}", written)
    finally:
        logger.remove(sink)
    assert messages == ["Parsed - Data: +1•••23"]


def test_dates_and_ids_are_not_masked() -> None:
    text = "2026-11-21 12:00:05 call CA0123456789 took 1234567 ms"
    assert mask_numbers(text) == text


async def test_services_are_deepgram_multilingual_anthropic_and_the_default_voice() -> None:
    settings = service_settings(RAPPORT_DEFAULT_LANGUAGE="es")
    async with AsyncAnthropic(api_key="a") as client:
        services = build_services(settings, client=client, system_instruction="Be brief.")
    assert (services.stt._settings.model, services.stt._settings.language) == ("nova-3", "multi")
    assert (services.tts._settings.voice, services.tts._settings.language) == (
        "es-ES-ElviraNeural",
        "es-ES",
    )
    assert services.llm._settings.model == "claude-haiku-4-5"


async def test_a_missing_service_key_is_named() -> None:
    settings = BotSettings(DEEPGRAM_API_KEY="d", ANTHROPIC_API_KEY="a")
    async with AsyncAnthropic(api_key="a") as client:
        with pytest.raises(ConfigurationError, match="AZURE_SPEECH_KEY, AZURE_SPEECH_REGION"):
            build_services(settings, client=client, system_instruction="")


def test_prompt_names_the_business_and_keeps_only_the_per_call_placeholders() -> None:
    settings = BotSettings(RAPPORT_BUSINESS_NAME="Bella's Bakery")
    template = prompt_template(settings)
    assert "Bella's Bakery" in template and settings.agent_purpose in template
    assert template.count("{{") == 2 and "{{memory}}" in template and "{{hours}}" in template
    at_call_start = with_hours(template, None, datetime.now(UTC))
    assert at_call_start.count("{{") == 1 and "{{memory}}" in at_call_start


@pytest.mark.parametrize("language", ["en", "es", "ca"])
def test_every_served_language_has_both_greetings(language: str) -> None:
    first = opening_line(None, language, business_name="Bella's Bakery")
    returning = CallerMemory(profile=CallerProfile(name="Lucía", call_count=1))
    again = opening_line(returning, language, business_name="Bella's Bakery")
    assert "Bella's Bakery" in first and "Lucía" not in first
    assert "Bella's Bakery" in again and "Lucía" in again and again != first
    prepared = CallerMemory(profile=CallerProfile(call_count=1, opening_line="Hola Lucía!"))
    assert opening_line(prepared, language, business_name="x") == "Hola Lucía!"


@pytest.mark.parametrize(
    "given",
    [
        "voice.example.test",
        "voice.example.test/",
        "https://voice.example.test",
        "wss://voice.example.test",
        "HTTPS://Voice.Example.Test/",
    ],
)
def test_every_public_host_form_gives_one_stream_url(given: str) -> None:
    assert public_host(given) == "voice.example.test"
    assert public_host(given.rstrip("/") + ":8443") == "voice.example.test:8443"


@pytest.mark.parametrize("given", ["https://host/path", "host name", "ftp://host", ""])
def test_anything_else_is_not_a_public_host(given: str) -> None:
    with pytest.raises(ValueError, match="not a public host"):
        public_host(given)
