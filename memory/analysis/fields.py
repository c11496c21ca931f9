"""The business's own analysis fields: defined in a file, asked of the analysis, validated.

A clinic wants each call's appointment type and preferred time, a bakery the order and the
pick-up date. The operator lists such fields in a YAML or JSON file (``RAPPORT_ANALYSIS_FIELDS``)::

    fields:
      - name: appointment_type
        description: What the caller wants to book.
        type: one_of
        options: [cleaning, checkup, emergency]
        required: true
      - name: insurance_provider
        description: The caller's dental insurer, as they named it.
        type: text
        personal: true

Types: ``text``, ``number``, ``boolean``, ``date`` (YYYY-MM-DD), ``time`` (24-hour HH:MM),
``one_of`` (with ``options``) and ``list_of_text`` ("one of" and "list of text" are accepted
too). ``required`` fields must be answered by the analysis (null when the call is not about
them); ``personal`` fields may hold personal data (the others are told not to).

:func:`load_fields` reads and checks the file: a bad one raises ``ConfigurationError`` with one
line naming the problem, so the bot and the worker refuse to start. :class:`AnalysisFields`
builds from the same definitions both the JSON Schema the analysis LLM answers
(:meth:`AnalysisFields.tool_schema`) and the pydantic model its answer is validated with
(:meth:`AnalysisFields.validated`): an invalid value is dropped with a reason, never failing the
analysis; text is scrubbed like the summary, so a field cannot smuggle a card number.

Values are stored as JSON values (``FieldValue``: dates and times as ISO text) on the call's
analysis only, under the caller's keys with the caller's retention: forget removes them, and
no agent-wide index holds any of them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import date, time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AllowInfNan,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    create_model,
    model_validator,
)

from memory.errors import ConfigurationError
from memory.models import CallAnalysis, CallRecord, FieldValue, clean_text
from memory.privacy.scrub import scrub

#: The setting naming the fields file, quoted in every error about it.
FIELDS_VARIABLE = "RAPPORT_ANALYSIS_FIELDS"
#: Longest text value kept (longer ones are cut, not dropped).
MAX_FIELD_CHARS = 500
#: Most items kept of a list of text.
MAX_LIST_ITEMS = 20
#: Names a field may not take: Rapport's own analysis and record fields, and the columns of
#: the follow-up list (``caller``, ``name``, ``ended``, ``call``) the values are shown beside.
RESERVED_NAMES = frozenset(
    {*CallAnalysis.model_fields, *CallRecord.model_fields, "caller", "name", "ended", "call"}
)

_TIME_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
_MISSING = "required but not given"


class FieldType(StrEnum):
    """What kind of value a field holds."""

    TEXT = "text"
    NUMBER = "number"
    BOOLEAN = "boolean"
    DATE = "date"
    TIME = "time"
    ONE_OF = "one_of"
    LIST_OF_TEXT = "list_of_text"


def _type_name(value: object) -> object:
    # "one of" and "list of text" read naturally in a YAML file.
    if isinstance(value, str):
        return "_".join(value.strip().lower().replace("-", " ").split())
    return value


def _iso_text(value: object) -> object:
    # Without this pydantic would take a number as a Unix timestamp.
    if not isinstance(value, str):
        raise ValueError("not ISO text")
    return value.strip()


class FieldDefinition(BaseModel):
    """One field as the fields file defines it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)
    #: What the analysis LLM reads to fill the field in.
    description: Annotated[str, BeforeValidator(lambda v: v.strip() if isinstance(v, str) else v)]
    type: Annotated[FieldType, BeforeValidator(_type_name)]
    #: The allowed values of a ``one_of`` field.
    options: tuple[str, ...] = ()
    #: The analysis must answer it (null when the call is not about it).
    required: bool = False
    #: It may hold personal data about the caller.
    personal: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> FieldDefinition:
        if not self.description:
            raise ValueError("the description is empty")
        if self.type == FieldType.ONE_OF:
            if not self.options or not all(option.strip() for option in self.options):
                raise ValueError("a one_of field needs a list of options")
            if len(set(self.options)) != len(self.options):
                raise ValueError("the options repeat a value")
        elif self.options:
            raise ValueError(f"options are only for one_of fields, not {self.type.value}")
        return self

    @property
    def expected(self) -> str:
        """What a valid value is, in words (the reason an invalid one was dropped)."""
        match self.type:
            case FieldType.ONE_OF:
                return "one of " + ", ".join(self.options)
            case FieldType.DATE:
                return "a date (YYYY-MM-DD)"
            case FieldType.TIME:
                return "a time (24-hour HH:MM)"
            case FieldType.LIST_OF_TEXT:
                return "a list of text"
            case FieldType.BOOLEAN:
                return "true or false"
            case FieldType.NUMBER:
                return "a number"
            case _:
                return "text"

    def property_schema(self) -> dict[str, Any]:
        """The JSON Schema of this field in the analysis tool (null: not said on the call)."""
        notes = [self.description]
        if self.required:
            notes.append("Required: answer it whenever the call is about it, else null.")
        if not self.personal:
            notes.append("Never put personal details about the caller here.")
        schema: dict[str, Any]
        match self.type:
            case FieldType.NUMBER:
                schema = {"type": ["number", "null"]}
            case FieldType.BOOLEAN:
                schema = {"type": ["boolean", "null"]}
            case FieldType.DATE:
                schema = {"type": ["string", "null"], "format": "date"}
                notes.append("A date, YYYY-MM-DD.")
            case FieldType.TIME:
                schema = {"type": ["string", "null"], "pattern": _TIME_PATTERN}
                notes.append("A time of day, 24-hour HH:MM.")
            case FieldType.ONE_OF:
                schema = {"type": ["string", "null"], "enum": [*self.options, None]}
            case FieldType.LIST_OF_TEXT:
                schema = {
                    "type": ["array", "null"],
                    "items": {"type": "string"},
                    "maxItems": MAX_LIST_ITEMS,
                }
            case _:
                schema = {"type": ["string", "null"], "maxLength": MAX_FIELD_CHARS}
        return {**schema, "description": " ".join(notes)}

    def annotation(self) -> Any:
        """The pydantic type that validates this field's answer."""
        match self.type:
            case FieldType.NUMBER:
                return StrictInt | Annotated[float, Field(strict=True), AllowInfNan(False)]
            case FieldType.BOOLEAN:
                return StrictBool
            case FieldType.DATE:
                return Annotated[date, BeforeValidator(_iso_text)]
            case FieldType.TIME:
                return Annotated[time, BeforeValidator(_iso_text)]
            case FieldType.ONE_OF:
                return Literal[self.options]
            case FieldType.LIST_OF_TEXT:
                return list[StrictStr]
            case _:
                return StrictStr


class AnalysisFields:
    """The business's own fields: the tool schema they add and the validation of the answer.

    Args:
        definitions: The fields, in the order the operator listed them.

    Raises:
        ConfigurationError: Two fields share a name, or one takes a name of Rapport's own.
    """

    def __init__(self, definitions: Sequence[FieldDefinition] = ()) -> None:
        seen: set[str] = set()
        for definition in definitions:
            if definition.name in seen:
                raise ConfigurationError(f"duplicate field name '{definition.name}'")
            if definition.name in RESERVED_NAMES:
                raise ConfigurationError(
                    f"field name '{definition.name}' clashes with one of Rapport's own"
                )
            seen.add(definition.name)
        self.definitions = tuple(definitions)
        self._by_name = {definition.name: definition for definition in self.definitions}
        # Python names apart from field names: a field called "json" or "copy" must not
        # shadow a BaseModel attribute; the answer is validated by alias.
        model_fields: dict[str, Any] = {
            f"field_{index}": (
                definition.annotation() | None,
                Field(... if definition.required else None, alias=definition.name),
            )
            for index, definition in enumerate(self.definitions)
        }
        self._model = create_model(
            "BusinessFields",
            __config__=ConfigDict(extra="ignore", validate_by_alias=True),
            **model_fields,
        )

    def __bool__(self) -> bool:
        return bool(self.definitions)

    def __iter__(self) -> Iterator[FieldDefinition]:
        return iter(self.definitions)

    def get(self, name: str) -> FieldDefinition | None:
        """The definition of one field, or None."""
        return self._by_name.get(name)

    def tool_schema(self) -> dict[str, Any]:
        """The JSON Schema object of the analysis tool's ``fields`` property."""
        return {
            "type": "object",
            "description": "The business's own fields for this call; null when not said.",
            "properties": {d.name: d.property_schema() for d in self.definitions},
            "required": [d.name for d in self.definitions if d.required],
        }

    def validated(self, answer: object) -> tuple[dict[str, FieldValue], dict[str, str]]:
        """The valid values of an answer, and why each invalid one was dropped.

        Args:
            answer: The ``fields`` object the analysis LLM gave (None when it gave none).

        Returns:
            The values by name (unanswered and null fields left out; text scrubbed), and the
            reasons by name of the values dropped. Reasons never quote the value.
        """
        if answer is None:
            answer = {}
        if not isinstance(answer, dict):
            return {}, {"fields": "the answer's fields were not an object"}
        given = {name: value for name, value in answer.items() if name in self._by_name}
        dropped: dict[str, str] = {}
        try:
            parsed = self._model.model_validate(given)
        except ValidationError as error:
            for detail in error.errors(include_input=False, include_url=False):
                name = str(detail["loc"][0])
                if detail["type"] == "missing":
                    dropped[name] = _MISSING
                else:
                    dropped[name] = f"not {self._by_name[name].expected}"
                given[name] = None
            parsed = self._model.model_validate(given)
        values: dict[str, FieldValue] = {}
        for index, definition in enumerate(self.definitions):
            value = _stored(definition, getattr(parsed, f"field_{index}"))
            if isinstance(value, _Secret):
                dropped[definition.name] = "it looked like a card, account or id number"
            elif value is not None:
                values[definition.name] = value
        return values, dropped


class _Secret:
    """A number value that the scrubber took for a secret."""


def _stored(definition: FieldDefinition, value: Any) -> FieldValue | _Secret | None:
    """A validated value as it is stored: text scrubbed and cleaned, dates as ISO text."""
    if value is None:
        return None
    match definition.type:
        case FieldType.TEXT:
            return clean_text(scrub(value), MAX_FIELD_CHARS) or None
        case FieldType.LIST_OF_TEXT:
            items = (clean_text(scrub(item), MAX_FIELD_CHARS) for item in value)
            kept = list(dict.fromkeys(item for item in items if item))[:MAX_LIST_ITEMS]
            return kept or None
        case FieldType.DATE:
            return str(value.isoformat())
        case FieldType.TIME:
            return str(value.isoformat(timespec="minutes"))
        case FieldType.NUMBER:
            # A card number is a number too: dropped rather than stored.
            return _Secret() if scrub(str(value)) != str(value) else value
        case _:
            return value


def load_fields(path: Path | None) -> AnalysisFields:
    """Read and check a fields file (YAML, or JSON when it ends in ``.json``).

    Args:
        path: The file (``RAPPORT_ANALYSIS_FIELDS``); None for no fields of the business's own.

    Raises:
        ConfigurationError: One line naming the problem: unreadable file, bad YAML or JSON, no
            ``fields`` list, a field with an unknown type, no description, a ``one_of`` with no
            options, a duplicate name or a name of Rapport's own.
    """
    if path is None:
        return AnalysisFields()
    where = f"{FIELDS_VARIABLE} ({path})"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
        raise ConfigurationError(f"{where} cannot be read: {reason}") from e
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as e:
        raise ConfigurationError(
            f"{where} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})"
        ) from e
    except yaml.YAMLError as e:
        raise ConfigurationError(f"{where} is not valid YAML ({_yaml_problem(e)})") from e
    fields = data.get("fields") if isinstance(data, dict) else None
    if not isinstance(fields, list):
        raise ConfigurationError(f"{where} must hold a 'fields' list")
    definitions = []
    for number, item in enumerate(fields, start=1):
        named = f" ('{item['name']}')" if isinstance(item, dict) and "name" in item else ""
        try:
            definitions.append(FieldDefinition.model_validate(item))
        except ValidationError as e:
            raise ConfigurationError(f"{where}: field {number}{named}: {_first_problem(e)}") from e
    try:
        return AnalysisFields(definitions)
    except ConfigurationError as e:
        raise ConfigurationError(f"{where}: {e}") from e


def _first_problem(error: ValidationError) -> str:
    detail = error.errors(include_url=False)[0]
    where = ".".join(str(part) for part in detail["loc"])
    message = detail["msg"].removeprefix("Value error, ")
    if detail["type"] == "enum" and detail["loc"] == ("type",):
        message = f"unknown type '{detail['input']}' (types: {', '.join(FieldType)})"
    return f"{where}: {message}" if where else message


def _yaml_problem(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = " ".join(str(getattr(error, "problem", None) or "unreadable").split())
    if mark is None:
        return problem
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"


def matches(value: FieldValue | None, wanted: str) -> bool:
    """Whether a stored value matches ``wanted`` as typed on a command line.

    Text and options compare without case; a list matches when one item does; booleans take
    true/false or yes/no; numbers compare as numbers.
    """
    wanted = wanted.strip()
    if value is None:
        return False
    if isinstance(value, bool):
        return wanted.lower() in (("true", "yes") if value else ("false", "no"))
    if isinstance(value, int | float):
        try:
            return float(wanted) == value
        except ValueError:
            return False
    if isinstance(value, list):
        return any(item.casefold() == wanted.casefold() for item in value)
    return value.casefold() == wanted.casefold()


def shown(value: FieldValue | None) -> str:
    """A stored value as a table cell: yes/no, items joined with "; ", "-" for none."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return "; ".join(value)
    return str(value)
