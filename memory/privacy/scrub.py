"""Deterministic scrubbing of secrets from text before anything is stored or sent for analysis.

``scrub`` replaces card numbers, security codes, IBANs, passwords, PINs and government ids with a
typed placeholder (``[card]``, ``[security code]``, ``[iban]``, ``[password]``, ``[pin]``,
``[id]``). Structured numbers are only replaced when their checksum holds (Luhn for cards,
mod-97 for IBANs, the control letter for Spanish DNI/NIE), so order numbers, dates, amounts and
phone numbers stay readable; passwords and PINs are only replaced when spoken as such ("my
password is …", "mi contraseña es …", "el meu PIN és …"), so "password reset" stays a topic.
Digits spoken as words ("four one one one …", "cuatro tres dos uno") count as digits.

Scrubbing is idempotent: placeholders never match again, so scrubbing twice changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from memory.models import Turn, clean_text

CARD = "[card]"
SECURITY_CODE = "[security code]"
IBAN = "[iban]"
PASSWORD = "[password]"
PIN = "[pin]"
ID = "[id]"
PLACEHOLDERS = (CARD, SECURITY_CODE, IBAN, PASSWORD, PIN, ID)

# Digit words of English, Spanish and Catalan, the languages Rapport answers in. Words that
# double as ordinary words ("one", "set", "un") are harmless: a run only becomes a secret when
# a checksum or a keyword ("PIN is") says so.
_DIGIT_WORDS = {
    **dict.fromkeys(("zero", "oh", "cero"), "0"),
    **dict.fromkeys(("one", "uno", "una", "un", "u"), "1"),
    **dict.fromkeys(("two", "dos", "dues"), "2"),
    **dict.fromkeys(("three", "tres"), "3"),
    **dict.fromkeys(("four", "cuatro", "quatre"), "4"),
    **dict.fromkeys(("five", "cinco", "cinc"), "5"),
    **dict.fromkeys(("six", "seis", "sis"), "6"),
    **dict.fromkeys(("seven", "siete", "set"), "7"),
    **dict.fromkeys(("eight", "ocho", "vuit"), "8"),
    **dict.fromkeys(("nine", "nueve", "nou"), "9"),
}
_DIGIT_TOKEN = re.compile(
    r"\b(?:\d+|" + "|".join(sorted(_DIGIT_WORDS, key=len, reverse=True)) + r")\b", re.IGNORECASE
)
# What may sit between the digit groups of one spoken or written number. A comma needs a space
# after it, so "1,250,000" stays an amount rather than joining into one long digit run.
_DIGIT_SEPARATOR = re.compile(r"\s*[-–]\s*|,?\s+")
_CARD_DIGITS = range(13, 20)


@dataclass(frozen=True, slots=True)
class _DigitToken:
    start: int
    end: int
    digits: str


def _digit_runs(text: str, pos: int = 0) -> Iterator[list[_DigitToken]]:
    """Yield the runs of digit tokens joined only by separators, from ``pos`` on."""
    run: list[_DigitToken] = []
    for match in _DIGIT_TOKEN.finditer(text, pos):
        raw = match.group()
        token = _DigitToken(match.start(), match.end(), _DIGIT_WORDS.get(raw.lower(), raw))
        if run and not _DIGIT_SEPARATOR.fullmatch(text, run[-1].end, token.start):
            yield run
            run = []
        run.append(token)
    if run:
        yield run


def _digit_run_at(text: str, pos: int) -> list[_DigitToken]:
    """Return the digit run starting exactly at ``pos`` (empty when none starts there)."""
    run = next(_digit_runs(text, pos), [])
    return run if run and run[0].start == pos else []


def _luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _replace_spans(text: str, spans: Iterable[tuple[int, int, str]]) -> str:
    """Replace non-overlapping ``(start, end, placeholder)`` spans, given in any order."""
    pieces: list[str] = []
    cursor = 0
    for start, end, placeholder in sorted(spans):
        if start < cursor:
            continue
        pieces += [text[cursor:start], placeholder]
        cursor = end
    pieces.append(text[cursor:])
    return "".join(pieces)


def _scrub_cards(text: str) -> str:
    """Replace the longest Luhn-valid 13-19 digit window of each digit run, left to right.

    No card number starts with 0 and none is written after "+", so international phone numbers
    ("+1 415 …", "00 1 415 …") are never candidates however their digits add up.
    """
    spans: list[tuple[int, int, str]] = []
    for run in _digit_runs(text):
        first = 1 if text[max(run[0].start - 1, 0)] == "+" else 0
        while first < len(run):
            if run[first].digits.startswith("0"):
                first += 1
                continue
            found = None
            digits = ""
            for last in range(first, len(run)):
                digits += run[last].digits
                if len(digits) > _CARD_DIGITS.stop - 1:
                    break
                if len(digits) in _CARD_DIGITS and _luhn_valid(digits):
                    found = last
            if found is None:
                first += 1
                continue
            spans.append((run[first].start, run[found].end, CARD))
            first = found + 1
    return _replace_spans(text, spans)


_IBAN_START = re.compile(r"\b[A-Z]{2}\d{2}(?=[A-Z0-9 ])")
_IBAN_CHUNK = re.compile(r" ?[A-Z0-9]+")
_IBAN_LENGTH = range(15, 35)


def _iban_valid(compact: str) -> bool:
    if len(compact) not in _IBAN_LENGTH:
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


def _scrub_ibans(text: str) -> str:
    """Replace IBANs (compact or grouped by spaces) whose mod-97 check holds."""
    spans: list[tuple[int, int, str]] = []
    for start_match in _IBAN_START.finditer(text):
        # The chunks after the country and check digits; try the longest mod-97-valid prefix so
        # a word after the IBAN ("… 1332 AND") is not swallowed.
        ends = []
        compact = start_match.group()
        pos = start_match.end()
        while chunk := _IBAN_CHUNK.match(text, pos):
            compact += chunk.group().lstrip()
            pos = chunk.end()
            if len(compact) > _IBAN_LENGTH.stop - 1:
                break
            ends.append((pos, compact))
        for end, candidate in reversed(ends):
            at_boundary = end == len(text) or not text[end].isalnum()
            if at_boundary and _iban_valid(candidate):
                spans.append((start_match.start(), end, IBAN))
                break
    return _replace_spans(text, spans)


# Not part of a longer grouped number: no digit group may touch either end.
_SSN = re.compile(r"(?<![\d-])(?<!\d )(\d{3})([- ])(\d{2})\2(\d{4})(?![- ]?\d)")
_DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"
# The control letter may be set apart by a space only when upper case, so "12345678 a" (a word)
# is not read as an id.
_DNI_NIE = re.compile(r"\b(?:([XYZxyz])[- ]?)?(\d{7,8})(?:-?([A-Za-z])|[ ]([A-Z]))\b")
# Upper case only: lower-case letters around six digits are ordinary words ("at 12 34 56 a").
_UK_NINO = re.compile(
    r"\b(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]"
    r" ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b"
)


def _ssn_span(match: re.Match[str]) -> str:
    area, group, serial = match.group(1), match.group(3), match.group(4)
    valid = area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"
    return ID if valid else match.group()


def _dni_nie_span(match: re.Match[str]) -> str:
    prefix = (match.group(1) or "").upper()
    number = match.group(2)
    letter = (match.group(3) or match.group(4)).upper()
    # A DNI has 8 digits; a NIE is X/Y/Z (read as 0/1/2) and 7 digits.
    if (prefix and len(number) != 7) or (not prefix and len(number) != 8):
        return match.group()
    value = int(str("XYZ".index(prefix)) + number) if prefix else int(number)
    return ID if _DNI_LETTERS[value % 23] == letter else match.group()


def _scrub_structured_ids(text: str) -> str:
    text = _SSN.sub(_ssn_span, text)
    text = _DNI_NIE.sub(_dni_nie_span, text)
    return _UK_NINO.sub(ID, text)


# Keyword-triggered secrets: "<keyword> <filler> <secret>". The filler is the copula or
# punctuation between them ("is", "'s", ":", "es", "és", "number").
_FILLER = r"(?:\s*['’]s\b|\s*[:=]|\s+(?:is|was|would be|number|es|era|és|seria|sería)\b)*\s*"
_SECURITY_CODE_KEY = re.compile(
    r"\b(?:cvv2?|cvc2?|cv2|cid|security code|card verification (?:code|value)"
    r"|código de seguridad|codi de seguretat)\b" + _FILLER,
    re.IGNORECASE,
)
_PIN_KEY = re.compile(
    r"\b(?:pin(?: number| code)?|c[oó]digo pin|n[uú]mero pin|codi pin)\b" + _FILLER,
    re.IGNORECASE,
)
_ID_KEY = re.compile(
    r"\b(?:ssn|social security(?: number)?|national insurance(?: number)?|passport(?: number)?"
    r"|driver['’]?s licen[cs]e(?: number)?|tax id|dni|nie|nif|pasaporte|passaport)\b" + _FILLER,
    re.IGNORECASE,
)
_ID_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_PASSWORD_KEY = re.compile(
    r"\b(?:password|passcode|passphrase|pass word|contraseña|contrasena|clave de acceso"
    r"|clave secreta|contrasenya|paraula de pas|clau d'accés)\b"
    r"(?:\s*['’]s\b|\s+(?:is|was|es|era|és)\b|\s*[:=])+\s*",
    re.IGNORECASE,
)
# First words that describe a password instead of revealing it ("my password is not working").
_PASSWORD_DESCRIPTIONS = frozenset(
    "not wrong incorrect invalid expired locked blocked working correct right too very still "  # noqa: SIM905
    "no broken reset changed required needed different weak strong short long empty missing "
    "forgotten lost being the same case-sensitive incorrecta incorrecto caducada bloqueada "
    "errónea erronea correcta muy demasiado nueva bloquejada errònia molt massa nova".split()
)
# Words that end a spoken password: the caller has moved on to the next clause.
_CLAUSE_WORDS = frozenset(
    "and but so because then also y pero porque entonces también però perquè llavors".split()  # noqa: SIM905
)
_PASSWORD_MAX_WORDS = 6
_WORD = re.compile(r"\S+")


def _scrub_digit_secrets(text: str, key: re.Pattern[str], placeholder: str, lengths: range) -> str:
    spans = []
    for match in key.finditer(text):
        run = _digit_run_at(text, match.end())
        if run and len("".join(token.digits for token in run)) in lengths:
            spans.append((run[0].start, run[-1].end, placeholder))
    return _replace_spans(text, spans)


def _scrub_id_numbers(text: str) -> str:
    """Replace the id after "passport number is", "SSN", "DNI" … when it holds 4+ digits."""
    spans = []
    for match in _ID_KEY.finditer(text):
        run = _digit_run_at(text, match.end())
        token = _ID_TOKEN.match(text, match.end())
        if run and len("".join(t.digits for t in run)) >= 4:
            spans.append((run[0].start, run[-1].end, ID))
        elif token and sum(char.isdigit() for char in token.group()) >= 4:
            spans.append((token.start(), token.end(), ID))
    return _replace_spans(text, spans)


def _password_end(text: str, pos: int) -> int | None:
    """Where the spoken password starting at ``pos`` ends, or None when nothing is revealed."""
    end = None
    for count, word in enumerate(_WORD.finditer(text, pos)):
        bare = word.group().lower().strip(".,;:!?")
        if count == 0 and (bare in _PASSWORD_DESCRIPTIONS or word.group().startswith("[")):
            return None
        if count == _PASSWORD_MAX_WORDS or (count and bare in _CLAUSE_WORDS):
            break
        stripped = word.group().rstrip(".,;:!?")
        end = word.start() + len(stripped) if stripped else word.end()
        if stripped != word.group():
            break
    return end


def _scrub_passwords(text: str) -> str:
    spans = []
    for match in _PASSWORD_KEY.finditer(text):
        end = _password_end(text, match.end())
        if end is not None:
            spans.append((match.end(), end, PASSWORD))
    return _replace_spans(text, spans)


_PASSES: tuple[Callable[[str], str], ...] = (
    # IBANs and ids first: their digit groups must not be taken for part of a card number.
    _scrub_ibans,
    _scrub_structured_ids,
    _scrub_id_numbers,
    _scrub_cards,
    lambda text: _scrub_digit_secrets(text, _SECURITY_CODE_KEY, SECURITY_CODE, range(3, 5)),
    lambda text: _scrub_digit_secrets(text, _PIN_KEY, PIN, range(3, 13)),
    _scrub_passwords,
)


def scrub(text: str) -> str:
    """Replace the secrets in ``text`` with typed placeholders.

    Args:
        text: Free text: a transcript turn, a summary or a fact.

    Returns:
        The same text with card numbers, security codes, IBANs, passwords, PINs and government
        ids replaced by ``[card]``, ``[security code]``, ``[iban]``, ``[password]``, ``[pin]``
        and ``[id]``; everything else is left exactly as it was.

    """
    for scrub_pass in _PASSES:
        text = scrub_pass(text)
    return text


def scrub_turns(turns: Iterable[Turn]) -> list[Turn]:
    """Scrubbed copies of transcript turns, ready to be stored or sent for analysis."""
    return [turn.model_copy(update={"text": scrub(turn.text)}) for turn in turns]


def scrub_fact(text: str) -> str | None:
    """Scrub a fact statement; None when it is empty or carried a secret.

    A fact that held a secret is a fact about the secret ("Caller's PIN is [pin]"): once
    scrubbed it tells a later call nothing except that a secret exists, so it is dropped.
    """
    scrubbed = clean_text(scrub(text))
    if not scrubbed or any(placeholder in scrubbed for placeholder in PLACEHOLDERS):
        return None
    return scrubbed
