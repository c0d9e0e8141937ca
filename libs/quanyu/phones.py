"""Phone numbers: the one parser that says which spellings are one phone, and the masking that
keeps every spelling it accepts out of logs.

"+86 138-0013-8000", "13800138000", "8613800138000", "１３８ ００１３ ８０００" and
"138.0013.8000" are one phone. A phone is written only with digits (ASCII or full-width), spaces,
`+ - . / ( )` and their full-width forms: anything else is not a phone, so the masking below,
which looks at every stretch of those characters, sees every number the parser could accept.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from itertools import islice

import phonenumbers

from quanyu.errors import InvalidArgument

DEFAULT_REGION = "CN"
MAX_PHONE_INPUT_LENGTH = 32
# The fewest digits of any number the parser accepts as valid anywhere.
_FEWEST_DIGITS = 7
_SPELLING = r"\d\s+\-./()＋－．／（）"
_PHONE_CHARACTERS = re.compile(rf"[{_SPELLING}]+")
# A stretch of text that could spell a number: it starts at a digit or at what may lead one, and
# stands apart from letters, digits and underscores on either side: a number glued to them is not
# one the parser would take, while ids and hashes (cus_5f2c…, a hex request id) are full of digit
# runs that would otherwise be masked as numbers.
_STRETCH = re.compile(rf"(?<![A-Za-z0-9_])[+＋(（]*\d[{_SPELLING}]*(?![A-Za-z0-9_])")
_DIGIT = re.compile(r"\d")


@dataclass(frozen=True)
class Phone:
    """A phone number in E.164 form, with the masked form that is all anyone is shown."""

    e164: str
    masked: str

    @classmethod
    def parse(cls, raw: str, *, field_name: str = "phone", region: str = DEFAULT_REGION) -> Phone:
        if len(raw) > MAX_PHONE_INPUT_LENGTH:
            raise InvalidArgument(field_name, f"must be at most {MAX_PHONE_INPUT_LENGTH} characters")
        if not _PHONE_CHARACTERS.fullmatch(raw):
            raise InvalidArgument(field_name, "is not a phone number: digits, spaces and + - . / ( ) only")
        try:
            number = phonenumbers.parse(raw, region)
        except phonenumbers.NumberParseException as exc:
            raise InvalidArgument(field_name, "is not a phone number") from exc
        if not phonenumbers.is_valid_number(number):
            raise InvalidArgument(field_name, "is not a valid phone number")
        e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        return cls(e164=e164, masked=_mask_number(number))


def keyed_digest(key: bytes, phone: Phone) -> str:
    """The keyed hash (HMAC-SHA256 of the E.164 form) a phone is found by: identity keeps its
    customers' phones so, and orders finds the customers it knows by the same hash."""
    return hmac.new(key, phone.e164.encode(), hashlib.sha256).hexdigest()


def mask_national(national: str, country_code: int) -> str:
    """138****8000 for a mainland number; other countries keep their calling code in front."""
    keep_head = 3 if len(national) >= 9 else 1
    masked = f"{national[:keep_head]}****{national[-4:]}"
    return masked if country_code == 86 else f"+{country_code} {masked}"


def _mask_number(number: phonenumbers.PhoneNumber) -> str:
    return mask_national(str(number.national_number), number.country_code or 0)


def mask_phones(text: str) -> str:
    """Every phone number in free text replaced by its masked form (138****8000).

    Text with fewer than seven digits cannot hold one and is returned as it is; that is most
    text a log line carries, and the check costs far less than the search.
    """
    if len(text) < _FEWEST_DIGITS or sum(1 for _ in islice(_DIGIT.finditer(text), _FEWEST_DIGITS)) < (
        _FEWEST_DIGITS
    ):
        return text
    budget = _Budget(_MOST_TRIES)
    masked = _STRETCH.sub(lambda stretch: _mask_stretch(stretch.group(), budget), text)
    return _MOBILE.sub(lambda mobile: f"{mobile.group(1)}****{mobile.group(2)}", masked)


# The most digits a number has (E.164), counting a 00 or 86 in front of a mainland one.
_MOST_DIGITS = 15
# How many spellings one text may have the parser try: enough for every number a log value holds,
# and a bound on what a caller's text can cost; past it, the rest of the text's digits go.
_MOST_TRIES = 64
_DIGITS = re.compile(r"\d+")
# What may lead a number's first digits: +86, (+86), （86）.
_LEADING = "+＋(（"
# A date with or without its hour (2026-12-07 09) is no phone, though it has digits enough.
_DATE = re.compile(r"\d{4}-\d{1,2}-\d{1,2}(?:[ T]\d{1,2})?")
# A mainland mobile number glued to letters (buyer13800138000, tb_138-0013-8000): not a spelling
# the parser takes on its own, but what a channel's account id may hold.
_MOBILE = re.compile(
    r"(?<!\d)(?:[+＋]?[8８][6６][\s\-－]?)?([1１][3-9３-９]\d)[\s\-－]?\d{4}[\s\-－]?(\d{4})(?!\d)"
)


@dataclass
class _Budget:
    tries: int


def _mask_stretch(stretch: str, budget: _Budget) -> str:
    """Every number in a stretch of phone characters masked: from each group of digits, the
    longest run of groups (up to 15 digits, and no longer than a phone the parser takes) that the
    parser takes for a valid number."""
    groups = [(m.start(), m.end()) for m in _DIGITS.finditer(stretch)]
    out: list[str] = []
    written, index = 0, 0
    while index < len(groups):
        start = groups[index][0]
        while start > 0 and stretch[start - 1] in _LEADING:
            start -= 1
        found: tuple[int, phonenumbers.PhoneNumber] | None = None
        digits = 0
        for last in range(index, len(groups)):
            digits += groups[last][1] - groups[last][0]
            end = groups[last][1]
            if digits > _MOST_DIGITS or end - start > MAX_PHONE_INPUT_LENGTH:
                break
            if digits < _FEWEST_DIGITS:
                continue
            if budget.tries <= 0:
                return "".join(out) + _DIGIT.sub("*", stretch[written:])
            budget.tries -= 1
            number = _valid(stretch[start:end])
            if number is not None:
                found = (last, number)
        if found is None:
            index += 1
            continue
        last, number = found
        out += [stretch[written:start], _mask_number(number)]
        written, index = groups[last][1], last + 1
    out.append(stretch[written:])
    return "".join(out)


def _valid(spelling: str) -> phonenumbers.PhoneNumber | None:
    if _DATE.fullmatch(spelling):
        return None
    try:
        number = phonenumbers.parse(spelling, DEFAULT_REGION)
    except phonenumbers.NumberParseException:
        return None
    return number if phonenumbers.is_valid_number(number) else None
