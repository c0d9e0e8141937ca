"""Hundreds of random well-formed messages to every RPC of every service, as a caller each RPC
admits: never an UNKNOWN or INTERNAL answer, a hang, a crash, an error the services did not
expect, or an effect given up for good, and every service stays SERVING."""

from __future__ import annotations

from tests.reliability.deployment import Deployment
from tests.reliability.fuzz import fuzz_every_rpc


def test_random_messages_to_every_rpc_get_answers_and_never_a_server_error(d: Deployment) -> None:
    figures = fuzz_every_rpc(d, cases=600, seed=2)
    assert figures.problems == []
    assert (figures.server_errors, figures.logged_errors, figures.effects_given_up) == (0, 0, 0)
    assert figures.ledger_violations == 0
    assert figures.answers["OK"] > 0
