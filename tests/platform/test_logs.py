"""Phone numbers never reach a log line unmasked, in any spelling the phone parser accepts, and
a traceback in a log line names frames, never the values of their local variables."""

from __future__ import annotations

import io
import json
import logging
import time

import phonenumbers
import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from quanyu import logs
from quanyu.errors import InvalidArgument
from quanyu.phones import Phone, mask_phones


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("13800138000", "138****8000"),
        ("phone +86 138-0013-8000 is not valid", "phone 138****8000 is not valid"),
        ("8613800138000", "138****8000"),
        ("+86 138 0013 8000", "138****8000"),
        ("call 139.1234.5678 now", "call 139****5678 now"),
        ("１３９１２３４５６７８", "139****5678"),
        ("（+86）139 1234 5678", "139****5678"),
        ("0086 139 1234 5678", "139****5678"),
        ("call +1 650-253-0000", "call +1 650****0000"),
        ("numbers 13800138000 and 13912345678.", "numbers 138****8000 and 139****5678."),
        # Two numbers in one run of phone characters, however it is spaced.
        ("13900013300-13914651360", "139****3300-139****1360"),
        ("138 0013 8000 139 0001 3300", "138****8000 139****3300"),
        # A mobile number inside an account id a channel sends.
        ("buyer13800138000", "buyer138****8000"),
        ("tb_138-0013-8000", "tb_138****8000"),
    ],
)
def test_phone_numbers_are_masked_in_free_text(text: str, masked: str) -> None:
    assert mask_phones(text) == masked


@pytest.mark.parametrize(
    "text",
    [
        "order ord_123 took 12.5 ms",
        "cus_5f2c9a1b",
        "12345",
        "req 0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d",
        "logs-written-2348544608c7413ab6e9b96c8dbfc720",  # digit runs inside a hex id
        "placed at 2026-12-07 09:14:42",
    ],
)
def test_text_without_phone_numbers_is_left_alone(text: str) -> None:
    assert mask_phones(text) == text


_FULL_WIDTH = str.maketrans("0123456789", "０１２３４５６７８９")
_SEPARATORS = [" ", "-", ".", "/", "  ", " - ", "－", "．", "／", "\u3000"]


@st.composite
def spellings(draw: st.DrawFn) -> tuple[str, str]:
    """A mainland mobile number, spelt as a caller might: a prefix or none, its digits split in
    groups by separators, some digits full-width. (national number, spelling)"""
    national = "1" + draw(st.sampled_from("3456789")) + draw(st.text("0123456789", min_size=9, max_size=9))
    cuts = sorted(draw(st.sets(st.integers(1, 10), max_size=4)))
    groups = [national[a:b] for a, b in zip([0, *cuts], [*cuts, 11], strict=True)]
    spelt = ""
    for index, group in enumerate(groups):
        spelt += group if index == 0 else draw(st.sampled_from(_SEPARATORS)) + group
    if draw(st.booleans()):
        spelt = spelt.translate(_FULL_WIDTH)
    prefix = draw(st.sampled_from(["", "+86 ", "86", "+86-", "(+86) ", "0086 ", "（+86）", "＋86 "]))
    return national, prefix + spelt


@given(spellings(), st.sampled_from(["", "phone ", "a=", "order for "]), st.sampled_from(["", " ok", ", x"]))
def test_every_spelling_the_parser_accepts_is_masked(
    spelling: tuple[str, str], before: str, after: str
) -> None:
    national, spelt = spelling
    try:
        Phone.parse(spelt)
    except InvalidArgument:
        return  # not a number the platform takes, so never one it could log from a request
    masked = mask_phones(before + spelt + after)
    assert f"{national[:3]}****{national[-4:]}" in masked
    assert national not in phonenumbers.normalize_digits_only(masked), masked


def test_the_parser_refuses_letters_the_masking_would_not_look_for() -> None:
    with pytest.raises(InvalidArgument):
        Phone.parse("139-CALL-5678")


def test_a_traceback_in_a_log_line_carries_no_local_values() -> None:
    stream = io.StringIO()
    logs.configure_logging("INFO")
    writer = logs._LineWriter(stream)
    structlog.configure(logger_factory=logs._QueuedLoggerFactory(writer), cache_logger_on_first_use=False)
    secret = "card-4111-1111-1111-1111"

    def fail(card: str) -> None:
        raise ValueError("declined")

    try:
        fail(secret)
    except ValueError:
        structlog.get_logger("test").exception("payment failed")
    writer.close()
    line = json.loads(stream.getvalue().splitlines()[-1])
    assert line["exception"][0]["frames"], line
    assert secret not in stream.getvalue()
    logging.getLogger().handlers.clear()


def test_text_of_any_length_costs_a_bounded_search_and_keeps_no_number() -> None:
    """A caller's text (a request id, say) could hold thousands of digit groups: the parser is
    tried a bounded number of times, and what is left past that is masked whole."""
    text = " ".join(str(n) for n in range(2_000)) + " 13912345678"
    masked = mask_phones(text)
    assert "13912345678" not in masked
    assert "12345678" not in phonenumbers.normalize_digits_only(masked)


def test_log_lines_reach_the_stream_while_the_process_runs_in_the_order_written() -> None:
    stream = io.StringIO()
    writer = logs._LineWriter(stream, interval_s=0.01)
    try:
        for number in range(100):
            writer.write(json.dumps({"event": "rpc", "number": number}))
        deadline = time.monotonic() + 10
        while stream.getvalue().count("\n") < 100 and time.monotonic() < deadline:
            time.sleep(0.01)
        written = [json.loads(line)["number"] for line in stream.getvalue().splitlines()]
        assert written == list(range(100))
    finally:
        writer.close()


def test_a_request_id_made_here_is_logged_as_made_and_one_a_caller_sends_is_masked() -> None:
    stream = io.StringIO()
    logs.configure_logging("INFO")
    writer = logs._LineWriter(stream)
    structlog.configure(logger_factory=logs._QueuedLoggerFactory(writer), cache_logger_on_first_use=False)
    # Hex digits can run like a phone number; an id the server made is none, and the one it
    # answers with is the one its lines name.
    made = logs.MadeHere("13800138000" + "ab" * 10 + "f")
    structlog.contextvars.bind_contextvars(request_id=made)
    structlog.get_logger("test").info("served")
    structlog.contextvars.bind_contextvars(request_id="13800138000-from-a-caller")
    structlog.get_logger("test").info("served")
    structlog.contextvars.clear_contextvars()
    writer.close()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()[-2:]]
    assert [line["request_id"] for line in lines] == [made, "138****8000-from-a-caller"]
    logging.getLogger().handlers.clear()
