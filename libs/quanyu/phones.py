"""Phone numbers: the one parser that says which spellings are one phone, and the masking that
keeps every spelling it accepts out of logs.

"+86 138-0013-8000", "13800138000", "8613800138000", "１３８ ００１３ ８０００" and
"138.0013.8000" are one phone. A phone is written only with digits (ASCII or full-width), spaces,
`+ - . / ( )` and their full-width forms: anything else is not a phone, so the masking below,
which looks at every stretch of those characters, sees every number the parser could accept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import islice

import phonenumbers
from phonenumbers import Leniency, PhoneNumberMatcher

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
    return _STRETCH.sub(_mask_stretch, text)


def _mask_stretch(match: re.Match[str]) -> str:
    stretch = match.group()
    if len(_DIGIT.findall(stretch)) < _FEWEST_DIGITS:
        return stretch
    parts, last = [], 0
    # The library's own finder first: it splits a stretch holding a number beside other digits.
    for found in PhoneNumberMatcher(stretch, DEFAULT_REGION, leniency=Leniency.VALID):
        parts += [stretch[last : found.start], _mask_number(found.number)]
        last = found.end
    if last:
        parts.append(stretch[last:])
        return "".join(parts)
    # A spelling the finder does not take for a number but the parser accepts (spaced digits,
    # unusual grouping): the whole stretch goes, keeping the last four digits.
    try:
        number = phonenumbers.parse(stretch, DEFAULT_REGION)
    except phonenumbers.NumberParseException:
        return stretch
    if phonenumbers.is_valid_number(number):
        return _mask_number(number)
    return stretch
