"""The attacks of a caller with an ordinary token on what is not its own, each played on the
running services (SQLite, and PostgreSQL when it is there) and each coming to nothing."""

from __future__ import annotations

import pytest

from tests.reliability.abuse import ATTACKS, AbuseFigures, token_claims
from tests.reliability.deployment import Deployment


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_an_attack_on_what_is_not_the_callers_own_comes_to_nothing(
    each_backend: Deployment, attack: str
) -> None:
    figures = AbuseFigures()
    ATTACKS[attack](each_backend, figures)
    assert figures.problems == []
    assert (figures.leaks, figures.value_spent_without_member, figures.points_minted_over_caps) == (0, 0, 0)
    assert figures.attacks > 0


def test_tokens_with_claims_of_any_kind_never_get_a_server_error(d: Deployment) -> None:
    figures = AbuseFigures()
    assert token_claims(d, figures, cases=300) == 0, figures.problems
    assert figures.attacks > 200
