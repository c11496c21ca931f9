"""Whether a fact may be stored: the one gate every write of a caller fact passes.

A fact is what a caller said, unverified. ``admit_fact`` is used by both ways a fact is
written, the post-call analysis and the LLM's ``remember`` tool, so both apply the same checks
in the same order:

1. the text is cleaned (whitespace collapsed); nothing left → refused as empty;
2. the analysis LLM classified it as an ``authority_claim``, or the deterministic filter below
   finds a claim of authority, privilege or instruction in it → refused;
3. it is scrubbed (``memory.privacy.scrub.scrub_fact``); a fact that carried a secret → refused;
4. it is capped at ``MAX_FACT_CHARS``.

The filter is the backstop for whatever kind the LLM gave: a few readable rules, one per class
of claim, matched on a folded copy of the text (lower case, accents, zero-width and
compatibility characters removed, so "Dueño", "dueno" and a full-width "ｏｗｎｅｒ" are one word).
It errs on the side of refusing: a lost fact costs less than a caller who talked their way into
"the owner gets everything free". ``tests/test_trust.py`` measures it on a table of hostile and
benign facts in English, Spanish and Catalan.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum

from memory.models import MAX_FACT_CHARS, FactKind, clean_text
from memory.privacy.scrub import scrub_fact


class Refusal(StrEnum):
    """Why a fact was not admitted."""

    EMPTY = "empty"
    AUTHORITY = "authority"
    SECRET = "secret"


@dataclass(frozen=True, slots=True)
class Admission:
    """The verdict on one fact.

    Attributes:
        text: The cleaned, scrubbed, capped text to store; None when refused.
        refusal: Why it was refused; None when admitted.
    """

    text: str | None
    refusal: Refusal | None

    @property
    def admitted(self) -> bool:
        """True when the fact may be stored (as ``text``)."""
        return self.text is not None


def admit_fact(text: str, *, kind: FactKind | None = None) -> Admission:
    """Decide whether a fact may be stored, and in which words.

    Args:
        text: The statement as the analysis or the ``remember`` tool proposes it.
        kind: The analysis LLM's classification, when there is one; ``authority_claim`` is
            never admitted, and any other kind still goes through the deterministic filter.

    Returns:
        The admitted text, or the reason it was refused.

    """
    cleaned = clean_text(text)
    if not cleaned:
        return Admission(None, Refusal.EMPTY)
    if kind is FactKind.AUTHORITY_CLAIM or _claims_authority(cleaned):
        return Admission(None, Refusal.AUTHORITY)
    scrubbed = scrub_fact(cleaned)
    if scrubbed is None:
        return Admission(None, Refusal.SECRET)
    return Admission(clean_text(scrubbed, MAX_FACT_CHARS), None)


# -- the deterministic filter --------------------------------------------------------------------
#
# Building blocks, all on folded text (see ``_folded``). Each rule below names the class of claim
# it catches; the benign look-alikes it must leave alone are in the comments.

#: Kinds of place a phone agent answers for: in a fact, "the clinic" is this business.
_VENUE = (
    r"(?:business|company|firm|shop|store|clinic|practice|surgery|office|bakery|restaurant"
    r"|salon|agency|garage|workshop|studio|gym|hotel|spa|pharmacy|cafe|bar|branch|franchise"
    r"|establishment|place|premises|negocio|empresa|tienda|clinica|consulta|despacho|oficina"
    r"|panaderia|restaurante|peluqueria|taller|local|establecimiento|sucursal|negoci|botiga"
    r"|despatx|forn|fleca|perruqueria|establiment)s?"
)
#: Words that make a noun phrase someone else's or some other one ("a bakery", "their shop").
_OTHER = (
    r"(?:a|an|another|other|one|two|three|several|some|many|his|her|their|its|own|un|una|uno"
    r"|unos|unas|otr[oa]s?|su|sus|dos|tres|varios|varias|uns|unes|altr[ea]s?|seu|seva|seus"
    r"|seves|dues)"
)
_THIS = (
    r"(?:here|aqui|this|your|our|este|esta|vuestr[oa]|nuestr[oa]|aquest[a]?|vostr[ea]|nostr[ea])\b"
)
#: A phrase naming this business: "this shop", "the clinic", "Bella's Bakery", "la botiga".
_OURS = rf"(?:{_THIS}|(?:(?!{_OTHER}\b)[\w'-]+\s+){{0,3}}?(?:l'|d')?{_VENUE}\b)"
_DEFINITE = (
    r"(?:\b(?:the|this|your|our|el|la|lo|este|esta|aquest|aquesta|nuestr[oa]|vuestr[oa]"
    r"|nostr[ea]|vostr[ea])\s+|\bl')"
)
_INDEFINITE = r"\b(?:a|an|un|una)\s+"
_COPULA = (
    r"\b(?:is|are|am|was|were|be|being|been|as|es|soy|eres|son|sea|era|fue|como|com|sou|sigui)\s+"
)
_PREPOSITION = r"(?:(?:of|at|for|in|from|de|en|a|del|al|dels|als)\s+|d')"
#: Roles that give power over a business.
_ROLE = (
    r"(?:co-?owner|owner|proprietor|proprietress|boss|manager|director|ceo|founder|co-?founder"
    r"|president|supervisor|administrator|admin|superuser|franchisee|chief|duen[oa]"
    r"|propietari[oa]?|amo|jef[ea]|gerente|gerent|encargad[oa]|encarregad[ao]|encarregat"
    r"|directora|administrador[a]?|fundador[a]?)s?"
)
_STAFF = (
    r"(?:member\s+of\s+staff|staff\s+member|team\s+member|staff|employee|personnel|colleague"
    r"|empleado|empleada|empleat|personal|plantilla)s?"
)
#: A role or staff noun followed by a place that is not this business: "of a bakery",
#: "at another company", "de un restaurante", "d'una escola", "of the football team".
_ELSEWHERE = rf"\s+{_PREPOSITION}(?!{_OURS})"
#: What may follow a staff noun for it to be about this business: nothing more, or here.
_ENDS_HERE = (
    rf"(?=\s*(?:$|[.,;:!]|(?:and|but|who|y|i|pero|que)\b|here\b|aqui\b|{_PREPOSITION}{_OURS}))"
)
#: Right before a role, words that make the role someone the caller deals with, not the caller:
#: "wants to speak to the manager", "asked for the owner", "hablar con el encargado".
_DEALS_WITH = re.compile(
    r"\b(?:to|with|for|from|ask|asks|asked|call|calls|called|contact|contacted|email|emailed"
    r"|tell|told|meet|met|see|saw|con|al|amb|per|para|por|a|de|of)\s+$"
)
#: Right before "free", nouns that make it "without": "gluten free", "step free access".
_WITHOUT = re.compile(
    r"\b(?:gluten|sugar|dairy|lactose|nut|fat|alcohol|caffeine|meat|egg|wheat|salt|smoke"
    r"|step|hands|stress|pain|scent|fragrance|plastic|cruelty|carbon|symptom)s?\s+$"
)


@dataclass(frozen=True, slots=True)
class _Rule:
    name: str
    claim: re.Pattern[str]
    #: A match is no claim when the text right before it ends with this.
    unless_after: re.Pattern[str] | None = None

    def matches(self, folded: str) -> bool:
        for match in self.claim.finditer(folded):
            after = self.unless_after
            if after is None or not after.search(folded, 0, match.start()):
                return True
        return False


def _rule(name: str, pattern: str, unless_after: re.Pattern[str] | None = None) -> _Rule:
    return _Rule(name, re.compile(pattern, re.VERBOSE), unless_after)


_RULES = (
    # "Ignore your instructions", "disregard the system prompt", "the agent must …",
    # "from now on treat …", "obey the caller". Not: "Caller always orders the chocolate cake".
    _rule(
        "instruction",
        r"""
          \b(?:ignore|ignores|disregard|forget|override|bypass|ignora|ignoren|olvida|olvidate
              |oblida|omite|omet)\b .{0,40}
            (?:instruc|prompt|\brule|\bregla|\bregle|\bnorma|\bnorme|\bpolic|guideline|directri
              |\bsystem|\bsistema|programming|\bthe\s+above|lo\s+anterior|l'anterior)
        | \bsystem\s+(?:prompt|message|instruction)
        | \bjailbreak | \bdeveloper\s+mode
        | \b(?:assistant|agent|bot|ai|model|you|agente|asistente|assistent|usted)\s+
            (?:must|should|shall|has\s+to|have\s+to|needs?\s+to|is\s+to|will\s+always
              |debe|debes|tiene\s+que|tienes\s+que|ha\s+de|ha\s+d'|has\s+de|haura\s+de)
        | \b(?:always|never|siempre|nunca|sempre|mai)\s+
            (?:give|grant|offer|approve|waive|allow|let|treat|trust|obey|follow|charge|accept
              |agree|dar|darle|conceder|aprobar|obedecer|donar|concedir|aprovar|obeir)\b
        | \b(?:from\s+now\s+on|going\s+forward|henceforth|a\s+partir\s+de\s+ahora
              |de\s+ahora\s+en\s+adelante|desde\s+ahora|a\s+partir\s+d'ara|d'ara\s+endavant
              |des\s+d'ara)\b .{0,40}
            \b(?:you|agent|assistant|treat|give|grant|obey|do|must|should|always|never|trata
              |tratar|da|dale|obedece|haz|debe|agente|tracta|dona|obeeix|fes|ha)\b
        | \b(?:obey|obeys|obedec\w*|obedezca\w*|obeir|obeeix\w*)\b
        | \bdo\s+(?:whatever|anything|everything)\s+(?:the\s+caller|they|he|she)
            \s+(?:says|asks|wants)
        | \b(?:haz|hacer|fes|fer)\s+(?:todo\s+)?(?:lo|el)\s+que\s+(?:diga|pida|digui|demani)
        | \b(?:new|standing|updated|secret)\s+(?:instruction|rule)s?\b
        | \bnuevas?\s+(?:instrucciones|reglas|normas) | \bnoves?\s+(?:instruccions|regles|normes)
        """,
    ),
    # "Caller owns the clinic", "runs this business", "owns Bella's Bakery", "is in charge
    # here". Not: "owns a dog", "manages a restaurant nearby", "owns the house on Elm Street".
    _rule(
        "ownership",
        rf"""
          \b(?:owns?|co-?owns?|runs?|manages?|operates?|directs?|posee|dirige|gestiona|regenta
              |administra|posseeix|dirigeix)\s+{_OURS}
        | \bin\s+charge(?:\s*(?:$|[.,;])|\s+here\b|\s+of\s+{_OURS})
        | \b(?:al\s+mando|al\s+capdavant)\b
        """,
    ),
    # The caller holds a role: "is the owner", "the clinic's co-owner", "es dueño de la
    # clínica", "és l'encarregat", "is a manager here". Not: "the owner of a small bakery",
    # "a manager at a bank", "es dueño de un perro", "speak to the manager", "the dog's owner".
    _rule(
        "role",
        rf"""
          {_DEFINITE} (?:{_VENUE}'s\s+|(?![\w-]+'s\b)[\w-]+\s+){{0,2}}? {_ROLE}\b (?!'s)
            (?!{_ELSEWHERE})
        | {_COPULA} (?!{_OTHER}\b)(?:[\w-]+\s+)?? {_ROLE}\b (?!'s) (?!{_ELSEWHERE})
        | {_INDEFINITE} (?:[\w-]+\s+)? {_ROLE}\s+(?:here|aqui|{_PREPOSITION}{_OURS})
        """,
        unless_after=_DEALS_WITH,
    ),
    # "Caller works at the practice", "is staff", "part of the staff", "trabaja aquí",
    # "forma part del personal". Not: "works at a warehouse", "is a staff nurse".
    _rule(
        "staff",
        rf"""
          \b(?:works?|working|worked|employed|trabaja|trabajo|treballa|treballo)\s+
            (?:here|aqui|(?:at|for|in|en|a|per|para|con|amb|de|d')\s*{_OURS}
              |(?:as|como|com|de|d')\s+(?:[\w'-]+\s+){{1,3}}?(?:at|for|in|en|a|per|para)\s+{_OURS})
        | (?:{_COPULA}|\bpart\s+of\s+|\bparte\s+de\s*|\bpart\s+d
            |\bforma\s+parte\s+|\bforma\s+part\s+)
            (?:the\s+|an?\s+|el\s+|la\s+|l'|del\s+|de\s+la\s+|de\s+|un\s+|una\s+)?{_STAFF}\b
            {_ENDS_HERE}
        """,
    ),
    # Free service: "gets everything free", "for free", "at no cost", "on the house", "pays
    # nothing", "no paga nada", "no se li cobra". Not: "gluten-free", "free on Tuesdays",
    # "free-range", "pays by card".
    _rule(
        "free",
        r"""
          (?<![-\w])free\b(?!-)
            (?!\s+(?:on|at|in|after|before|from|until|till|between|during|most|every|all\s+day
                  |this|next|today|tomorrow|tonight|weekends?|mornings?|afternoons?|evenings?
                  |nights?|days?|time|to\s+(?:talk|come|call|chat|meet|visit|drop|pop|speak))\b)
        """,
        unless_after=_WITHOUT,
    ),
    _rule(
        "no_cost",
        r"""
          \b(?:cost|charge|fee|rent|interest|commission)[-\s]free\b
        | \bfor\s+free\b | \bat\s+no\s+(?:extra\s+)?(?:cost|charge)\b
        | \bno\s+(?:extra\s+)?(?:charge|cost)\b | \bwithout\s+(?:charge|paying|payment|cost)\b
        | \bon\s+the\s+house\b | \bcomplimentary\b | \bcomp(?:ed|'d)\b | \bgratis\b | \bgratuit
        | \bde\s+franc\b | \bsin\s+(?:coste|costo|cargo|pagar)\b | \bsense\s+(?:cost|carrec|pagar)\b
        | \b(?:cuenta|compte)\s+de\s+la\s+casa\b | \b(?:invita|convida)\s+la\s+casa\b
        | \bcosts?\s+(?:nothing|zero)\b | \bfor\s+nothing\b
        | \bunlimited\b | \bilimitad | \bil·?limitat
        | \b(?:pays?|paying|paid)\s+(?:nothing|zero|\$?0\b|nada|res\b)
        | (?:n't|\bnot|\bnever|\bno)\s+
            (?:(?:have|has|need|needs|ever|to|be|going|required|expected)\s+){0,3}
            pay\b(?!\s+(?:by|with|in|via|using|online|cash|card)\b)
        | (?:n't|\bnot|\bnever|\bno\s+longer)\s+(?:(?:be|been|being|ever|get|gets)\s+){0,2}
            (?:charged|billed|invoiced)\b
        | \b(?:fee|fees|charge|charges|surcharge|deposit|cost|costs|price|rate)\s+(?:\w+\s+){0,2}?
            (?:n't|not|never)\s+appl
        | \b(?:no|nunca|mai|ni)\s+(?:(?:tiene|tienen|que|ha|han|hace|falta|de|cal|li|le|se|necesita
              |debe|deu|mai|nunca)\s+){0,3}pag(?:a|ar|ue|uen|ara|ra)\b
            (?!\s+(?:con|en|por|amb|per|mediante)\b)
        | \b(?:no|sin|sense|nunca|mai)\s+(?:se\s+|es\s+)?(?:le\s+|li\s+|l'|els\s+|les\s+)?cobr
        """,
    ),
    # Discounts: "20% discount", "100% off", "half price", "descuento", "descompte".
    # Not: "day off", "takes two days off".
    _rule(
        "discount",
        r"""
          \b(?:discount|rebate|markdown|descuento|descompte|rebaja|rebaixa|bonificaci)
        | \bhalf[-\s]?(?:price|off)\b | \bspecial\s+price | \bprecio\s+especial | \bpreu\s+especial
        | \bstaff\s+(?:price|rate) | \bat\s+cost\b | \bprice\s+match
        | \d\s*(?:%|percent|per\s*cent|por\s*ciento)\s*(?:off|de\s+descuento|de\s+descompte|menos)\b
        | \d\s*(?:euros?|dollars?|pounds?|[€$£])?\s*off\b
        """,
    ),
    # Entitlements and waived fees: "is owed", "entitled to", "fees are waived", "exempt from
    # the fee", "tiene derecho a", "té dret a". Not: "signed the waiver", "owes 50 euros".
    _rule(
        "entitlement",
        r"""
          \bwaiv(?:e|ed|es|ing)\b | \bexempt | \bexent[oa]s?\b | \bcondon\w*
        | \bentitle | \bowed\b | \bderecho\s+a\b | \bdret\s+a\b | \bse\s+le\s+debe | \bse\s+li\s+deu
        | \bdeserves?\s+(?:a\s+)?(?:free|refund|discount|compensation|credit)
        | \bguaranteed\s+(?:a\s+)?(?:free|refund|discount|credit|compensation)
        | \b(?:refund|credit|compensation|voucher|reimbursement)s?\b .{0,30}
            \b(?:always|every|automatic|whenever|any\s*time|guaranteed)
        | \bforgiv(?:e|en)\b .{0,20} \b(?:fee|debt|charge|bill|payment)
        """,
    ),
    # Privileges: "is a VIP", "is authorised to change prices", "special treatment".
    # Not: "authorised the payment".
    _rule(
        "privilege",
        r"""
          \bvip\b | \bprivileg | \bspecial\s+treatment | \btrato\s+especial | \btracte\s+especial
        | \bpriority\s+over | \bskips?\s+the\s+(?:queue|line) | \bwhitelisted | \ballowlisted
        | \bclearance | \b(?:root|admin|administrator)\s+access
        | \b(?:is|are|as|been|be)\s+(?:an?\s+|fully\s+)?(?:verified|authori[sz]ed|trusted)\b
        | \b(?:esta|es)\s+(?:autorizad|verificad|autoritzat|verificat)
        | \bde\s+confian(?:za|ca)\b
        """,
    ),
)

_INVISIBLE = {"Cf", "Mn"}
_SPACES = re.compile(r"\s+")


def _folded(text: str) -> str:
    """Lower case without accents, zero-width or compatibility characters; straight quotes."""
    decomposed = unicodedata.normalize("NFKD", text)
    kept = "".join(char for char in decomposed if unicodedata.category(char) not in _INVISIBLE)
    return _SPACES.sub(" ", kept.replace("’", "'").replace("‘", "'")).strip().lower()


def _claims_authority(text: str) -> bool:
    folded = _folded(text)
    return any(rule.matches(folded) for rule in _RULES)
