"""Every RPC of every service refuses callers with no, expired, forged or malformed tokens, and
callers whose role its proto comment leaves out; every RPC, as each role, on an object of the
caller's own, of another store, of another channel's customer and of nobody, gives what the protos
document (another's object answered exactly as nobody's); a page token serves no caller but the
one it was given to."""

from __future__ import annotations

from tests.reliability.authz import authorisation_matrix, documented_roles
from tests.reliability.deployment import Deployment
from tests.reliability.fuzz import SERVICES


def test_every_rpc_documents_the_roles_it_admits() -> None:
    documented = documented_roles()
    every = {f"/{s.full_name}/{m.name}" for s in SERVICES.values() for m in s.methods}
    assert {method for method in every if not documented.get(method)} == set()


def test_no_cell_of_the_authorisation_matrix_lets_an_intruder_in_or_tells_what_exists(d: Deployment) -> None:
    figures = authorisation_matrix(d)
    assert figures.problems == []
    assert (figures.leaks, figures.over_refused) == (0, 0)
    assert figures.cells > 1_300
