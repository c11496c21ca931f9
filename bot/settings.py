"""Bot settings, from the environment (``.env`` fills it in first: see :mod:`cli.environment`).

Keys are checked when the bot starts, not when a call first needs them: a missing key fails
start-up with one line naming the variable and the README section that explains it.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.hours import BusinessHours
from bot.targets import phone_number, transfer_target
from bot.trust import UnverifiedCallers
from memory.errors import ConfigurationError, InvalidIdentityError
from memory.language import LANGUAGES
from memory.privacy.identity import validate_agent_id
from memory.settings import README_KEYS, MemorySettings

DEFAULT_PROMPT = Path(__file__).with_name("prompts") / "system.md"

#: Longest business name: it is spoken in every greeting.
MAX_BUSINESS_NAME_CHARS = 100
#: An Azure neural voice name: its locale, then the voice ("es-ES-ElviraNeural").
_VOICE = re.compile(r"[a-z]{2,3}-[A-Z]{2}(?:-[A-Za-z]+)?-[A-Za-z0-9]+Neural")
_LANGUAGE = re.compile(r"[a-z]{2,3}")
#: A transfer reason in RAPPORT_TRANSFER_TARGETS: a word or two.
_REASON = re.compile(r"[\w-]+(?: [\w-]+)?")
#: A public host: optional scheme, host name, optional port, optional trailing slash.
_PUBLIC_HOST = re.compile(
    r"(?i:(?:https?|wss?)://)?(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::\d{1,5})?)/?"
)


def public_host(value: str) -> str:
    """The ``host[:port]`` of a public address (``host``, ``host/``, ``https://host:8443``...).

    Raises:
        ValueError: Not a host name with an optional scheme and port.
    """
    match = _PUBLIC_HOST.fullmatch(value.strip())
    if match is None:
        raise ValueError(
            f"{value!r} is not a public host: give host[:port], optionally with https:// or wss://"
        )
    return match["host"].lower()


class BotSettings(BaseSettings):
    """Everything a call needs besides memory: keys, models, voices, the agent and its prompt."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    deepgram_api_key: str | None = Field(default=None, alias="DEEPGRAM_API_KEY", repr=False)
    anthropic_api_key: str | None = Field(default=None, alias="ANTHROPIC_API_KEY", repr=False)
    azure_speech_key: str | None = Field(default=None, alias="AZURE_SPEECH_KEY", repr=False)
    azure_speech_region: str | None = Field(default=None, alias="AZURE_SPEECH_REGION")
    daily_api_key: str | None = Field(default=None, alias="DAILY_API_KEY", repr=False)
    twilio_account_sid: str | None = Field(default=None, alias="TWILIO_ACCOUNT_SID")
    twilio_auth_token: str | None = Field(default=None, alias="TWILIO_AUTH_TOKEN", repr=False)
    #: Hang up Twilio calls through its REST API when the bot ends them (needs credentials).
    twilio_hang_up: bool = Field(default=True, alias="RAPPORT_TWILIO_HANG_UP")
    #: Twilio's REST API root (default ``https://api.twilio.com``; a local fake in tests).
    twilio_api_base_url: str | None = Field(default=None, alias="TWILIO_API_BASE_URL")
    #: The business's Twilio number that calls callers back (E.164); unset: no call backs.
    callback_from: str | None = Field(default=None, alias="RAPPORT_CALLBACK_FROM")
    #: The server's public address, as Twilio reaches it (``-x`` sets it too).
    public_url: str | None = Field(default=None, alias="RAPPORT_PUBLIC_URL")
    #: The pinless dial-in configuration's ``hmac`` (base64): dial-in webhooks must be signed.
    daily_dialin_hmac: str | None = Field(
        default=None, alias="RAPPORT_DAILY_DIALIN_HMAC", repr=False
    )
    #: What a caller whose number is only claimed (not attested) gets.
    unverified_callers: UnverifiedCallers = Field(
        default=UnverifiedCallers.NONE, alias="RAPPORT_UNVERIFIED_CALLERS"
    )
    #: The secret Vapi sends with each request (its server credential); without it the Vapi
    #: endpoints (``/vapi/...``) are not served.
    vapi_secret: str | None = Field(default=None, alias="RAPPORT_VAPI_SECRET", repr=False)
    #: The Vapi assistant an ``assistant-request`` is answered with (its first message set to
    #: the caller's opening line).
    vapi_assistant_id: str | None = Field(default=None, alias="RAPPORT_VAPI_ASSISTANT_ID")
    #: The bearer key of the HTTP API for webhook platforms (``/v1/...``); unset: not served.
    api_key: str | None = Field(default=None, alias="RAPPORT_API_KEY", repr=False)
    #: Honour "call as this number" in the local room even when the server is not on loopback.
    test_room: bool = Field(default=False, alias="RAPPORT_TEST_ROOM")

    llm_model: str = Field(default="claude-haiku-4-5", alias="RAPPORT_LLM_MODEL")
    #: Gateways, or the local fake in tests, speak the Anthropic API at another address.
    llm_base_url: str | None = Field(default=None, alias="ANTHROPIC_BASE_URL")
    stt_model: str = Field(default="nova-3", alias="RAPPORT_STT_MODEL")
    #: ``multi`` lets Deepgram detect the caller's language turn by turn.
    stt_language: str = Field(default="multi", alias="RAPPORT_STT_LANGUAGE")
    voices: dict[str, str] = Field(
        default_factory=lambda: {code: language.voice for code, language in LANGUAGES.items()},
        alias="RAPPORT_VOICES",
    )
    default_language: str = Field(default="en", alias="RAPPORT_DEFAULT_LANGUAGE")

    agent_id: str = Field(default="default", alias="RAPPORT_AGENT_ID")
    business_name: str = Field(default="our business", alias="RAPPORT_BUSINESS_NAME")
    #: What the agent is for; it also steers which memories are chosen at call start.
    agent_purpose: str = Field(
        default="Answer questions, take bookings and messages, and arrange call-backs.",
        alias="RAPPORT_AGENT_PURPOSE",
    )
    prompt_file: Path = Field(default=DEFAULT_PROMPT, alias="RAPPORT_PROMPT_FILE")
    #: Where ``transfer_call`` puts a caller through: a phone number (+E.164) or ``sip:`` address.
    transfer_to: str | None = Field(default=None, alias="RAPPORT_TRANSFER_TO")
    #: Per-reason targets, JSON (``{"emergency": "+34...", "sales": "sip:sales@..."}``).
    transfer_targets: dict[str, str] = Field(default={}, alias="RAPPORT_TRANSFER_TARGETS")
    #: Opening hours, JSON (see ``bot.hours``); None: always open.
    business_hours: BusinessHours | None = Field(default=None, alias="RAPPORT_BUSINESS_HOURS")

    memory_enabled: bool = Field(default=True, alias="RAPPORT_MEMORY_ENABLED")
    max_facts: int = Field(default=10, ge=0, le=100, alias="RAPPORT_MAX_FACTS")
    memory_token_budget: int = Field(default=400, ge=50, alias="RAPPORT_MEMORY_TOKEN_BUDGET")
    memory_load_budget_ms: float = Field(default=150, gt=0, alias="RAPPORT_MEMORY_LOAD_BUDGET_MS")
    recall_budget_ms: float = Field(default=15, gt=0, alias="RAPPORT_RECALL_BUDGET_MS")
    filler_after_s: float = Field(default=1.2, gt=0, alias="RAPPORT_FILLER_AFTER_S")
    idle_timeout_s: float = Field(default=300, gt=0, alias="RAPPORT_IDLE_TIMEOUT_S")
    #: Silence after which the agent asks once whether the caller is still there (0, or not
    #: shorter than the idle timeout: never; the idle timeout then hangs up without a word).
    silence_check_s: float = Field(default=25, ge=0, alias="RAPPORT_SILENCE_CHECK_S")
    #: Run the post-call analysis worker inside the bot process (``python runner.py worker``
    #: runs it on its own).
    run_worker: bool = Field(default=True, alias="RAPPORT_RUN_WORKER")

    memory: MemorySettings = Field(default_factory=MemorySettings)

    @field_validator("agent_id")
    @classmethod
    def _valid_agent_id(cls, agent_id: str) -> str:
        try:
            return validate_agent_id(agent_id)
        except InvalidIdentityError as e:
            raise ValueError(str(e)) from e

    @field_validator("business_name")
    @classmethod
    def _speakable_business_name(cls, name: str) -> str:
        name = " ".join(name.split())
        if not name or len(name) > MAX_BUSINESS_NAME_CHARS or set(name) & set("{}<>"):
            raise ValueError(
                f"must be 1-{MAX_BUSINESS_NAME_CHARS} characters, without braces or angle brackets"
            )
        return name

    @field_validator("voices")
    @classmethod
    def _azure_voices(cls, voices: dict[str, str]) -> dict[str, str]:
        if not voices:
            raise ValueError("needs at least one language")
        for language, voice in voices.items():
            if not _LANGUAGE.fullmatch(language) or not _VOICE.fullmatch(voice):
                raise ValueError(
                    f"{language!r}: {voice!r} is not a language code and an Azure neural voice "
                    '(e.g. "es": "es-ES-ElviraNeural")'
                )
        return voices

    @field_validator("transfer_to")
    @classmethod
    def _transfer_to(cls, value: str | None) -> str | None:
        return transfer_target(value) if value and value.strip() else None

    @field_validator("callback_from")
    @classmethod
    def _callback_from(cls, value: str | None) -> str | None:
        return phone_number(value) if value and value.strip() else None

    @field_validator("transfer_targets")
    @classmethod
    def _transfer_targets(cls, targets: dict[str, str]) -> dict[str, str]:
        checked = {}
        for reason, target in targets.items():
            key = " ".join(reason.lower().split())
            if not _REASON.fullmatch(key):
                raise ValueError(f"{reason!r}: a reason is a word or two (letters, digits, -, _)")
            try:
                checked[key] = transfer_target(target)
            except ValueError as e:
                raise ValueError(f"{reason!r}: {e}") from e
        return checked

    @field_validator("public_url")
    @classmethod
    def _public_host(cls, value: str | None) -> str | None:
        return public_host(value) if value else None

    @model_validator(mode="after")
    def _default_voice(self) -> BotSettings:
        if self.default_language not in self.voices:
            raise ValueError(
                f"RAPPORT_DEFAULT_LANGUAGE={self.default_language!r} has no voice in RAPPORT_VOICES"
            )
        return self

    def keys_for(self, transport: str | None) -> tuple[str, ...]:
        """The variables a transport needs besides the services' keys (None: all in one)."""
        if transport == "twilio" and not self.twilio_hang_up:
            return ("TWILIO_AUTH_TOKEN",)  # still signs every webhook
        return KEYS_FOR_TRANSPORT.get(transport or "", ())

    def system_prompt_template(self) -> str:
        """The system prompt with its ``{{memory}}`` placeholder, read from ``prompt_file``."""
        try:
            return self.prompt_file.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigurationError(
                f"RAPPORT_PROMPT_FILE cannot be read ({self.prompt_file}); see {README_KEYS}"
            ) from e

    def require(self, *names: str) -> None:
        """Fail with one line naming every missing variable among ``names`` (env aliases)."""
        fields = type(self).model_fields
        missing = [
            name
            for name in names
            for field, info in fields.items()
            if info.alias == name and not getattr(self, field)
        ]
        if missing:
            raise ConfigurationError(
                f"Missing {', '.join(missing)}: set {'it' if len(missing) == 1 else 'them'} "
                f"in the environment or .env (see {README_KEYS})"
            )


#: The keys each part of a call needs, by transport.
KEYS_FOR_SERVICES = (
    "DEEPGRAM_API_KEY",
    "ANTHROPIC_API_KEY",
    "AZURE_SPEECH_KEY",
    "AZURE_SPEECH_REGION",
)
KEYS_FOR_TRANSPORT = {
    "webrtc": (),
    "daily": ("DAILY_API_KEY",),
    "twilio": ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN"),
}
