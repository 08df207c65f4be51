"""Secret grants and project-scoped tokens: the pure check (exhaustively, and as a property), the ops that
store grants, and the `projects` claim."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orca import auth, spec
from orca.errors import Forbidden, Invalid, OrcaError, Unauthorized
from orca.secret_scopes import Authority, check_secret_refs, check_write, grants_of, parse_grants
from orca.state.machine import apply, encode_entry, new_state

KEY = b"k" * 32


def svc(name: str, project: str, *refs: str) -> dict:
    return spec.validate_service({"name": name, "image": "img", "project": project,
                                  "env": {f"E{i}": f"x${{secrets.{r}}}y" for i, r in enumerate(refs)}})


def deploy(*specs: dict) -> dict:
    return {"services": [{"name": s["name"], "spec": s, "digest": spec.spec_digest(s)} for s in specs]}


def state_with(**grants: dict | None) -> dict:
    s = new_state()
    for key, g in grants.items():
        s["secrets"][key] = {"key": key, "ciphertext": "c", "created_at": 0.0, "updated_at": 0.0,
                             **({} if g is None else {"grants": g})}
    return s


ALL = {"all_projects": True, "projects": []}
SHOP = {"all_projects": False, "projects": ["shop"]}
NONE = {"all_projects": False, "projects": []}


def code_of(fn) -> str | None:  # type: ignore[no-untyped-def]
    try:
        fn()
    except OrcaError as err:
        return err.code
    return None


# --- who may reference what -----------------------------------------------------------------------------

CASES = [
    # authority, secret grants (None: stored before grants existed; "missing": no such secret), project, allowed
    (Authority("admin"), "missing", "shop", True),
    (Authority("admin"), None, "shop", True),
    (Authority("admin"), SHOP, "web", True),
    (Authority("deployer"), ALL, "shop", True),
    (Authority("deployer"), SHOP, "shop", False),  # unscoped deployer: only all-project secrets
    (Authority("deployer"), None, "shop", False),  # legacy secrets are admin-only
    (Authority("deployer"), NONE, "shop", False),
    (Authority("deployer"), "missing", "shop", False),  # granted later, it would reach an unauthorised spec
    (Authority("deployer", frozenset({"shop"})), SHOP, "shop", True),
    (Authority("deployer", frozenset({"shop"})), ALL, "shop", True),
    (Authority("deployer", frozenset({"shop"})), SHOP, "web", False),  # granted to shop, spec in web
    (Authority("deployer", frozenset({"web"})), SHOP, "shop", False),  # the token is not for shop
    (Authority("deployer", frozenset({"shop"})), None, "shop", False),
    (Authority("viewer"), ALL, "shop", False),
    (Authority(None), ALL, "shop", False),
]


@pytest.mark.parametrize("authority,grants,project,allowed", CASES)
def test_reference_rules(authority: Authority, grants: object, project: str, allowed: bool) -> None:
    secrets = {} if grants == "missing" else state_with(DB=grants)["secrets"]  # type: ignore[arg-type]
    call = lambda: check_secret_refs(secrets, [(project, svc("a", project, "DB"))], authority)  # noqa: E731
    assert code_of(call) == (None if allowed else "SECRET_FORBIDDEN")


def test_refusal_names_the_first_forbidden_key_and_never_a_value() -> None:
    s = state_with(OK=ALL, ZED=SHOP, BAD=SHOP)
    with pytest.raises(Forbidden) as info:
        check_write(s, "deploy", deploy(svc("a", "shop", "OK", "ZED", "BAD")), Authority("deployer"))
    assert info.value.code == "SECRET_FORBIDDEN" and info.value.status == 403
    assert info.value.details == {"secret": "BAD", "project": "shop", "service": "a"}
    assert "BAD" in info.value.message


@settings(max_examples=300, deadline=None)
@given(grant_all=st.booleans(), granted=st.sets(st.sampled_from(["a", "b", "c"])),
       scope=st.none() | st.frozensets(st.sampled_from(["a", "b", "c"]), min_size=1),
       project=st.sampled_from(["a", "b", "c"]), role=st.sampled_from(["viewer", "deployer", "admin"]))
def test_a_non_admin_reference_is_allowed_only_through_a_grant_the_caller_holds(
        grant_all: bool, granted: set[str], scope: frozenset[str] | None, project: str, role: str) -> None:
    grants = {"all_projects": grant_all, "projects": [] if grant_all else sorted(granted)}
    s = state_with(DB=grants)
    authority = Authority(role, scope)
    allowed = code_of(lambda: check_secret_refs(s["secrets"], [(project, svc("x", project, "DB"))],
                                                authority)) is None
    expected = role == "admin" or (role == "deployer" and (
        grant_all or (scope is not None and project in scope and project in granted)))
    assert allowed == expected


# --- project scope of writes ----------------------------------------------------------------------------

def test_a_scoped_token_writes_only_its_projects() -> None:
    s = new_state()
    ok = apply(s, encode_entry("deploy", deploy(svc("db", "shop"), svc("site", "web")), now=1.0))
    assert "error" not in ok
    shop = Authority("deployer", frozenset({"shop"}))
    assert code_of(lambda: check_write(s, "deploy", deploy(svc("db", "shop")), shop)) is None
    assert code_of(lambda: check_write(s, "deploy", deploy(svc("new", "web")), shop)) == "PROJECT_FORBIDDEN"
    # moving someone else's service into my project is writing their project
    assert code_of(lambda: check_write(s, "deploy", deploy(svc("site", "shop")), shop)) == "PROJECT_FORBIDDEN"
    for op in ("scale", "stop_service", "start_service", "purge_service", "promote", "rollback", "set_scaling"):
        assert code_of(lambda op=op: check_write(s, op, {"name": "site"}, shop)) == "PROJECT_FORBIDDEN"
        assert code_of(lambda op=op: check_write(s, op, {"name": "db"}, shop)) is None
        assert code_of(lambda op=op: check_write(s, op, {"name": "gone"}, shop)) is None  # the op says 404
    assert code_of(lambda: check_write(s, "stop_project", {"project": "web"}, shop)) == "PROJECT_FORBIDDEN"
    assert code_of(lambda: check_write(s, "register_webhook", {"service": "site"}, shop)) == "PROJECT_FORBIDDEN"
    s["webhooks"]["h"] = {"id": "h", "service": "site"}
    assert code_of(lambda: check_write(s, "remove_webhook", {"id": "h"}, shop)) == "PROJECT_FORBIDDEN"
    # an op the scope check does not know is refused to scoped tokens, allowed to the others
    assert code_of(lambda: check_write(s, "some_new_op", {}, shop)) == "PROJECT_FORBIDDEN"
    assert code_of(lambda: check_write(s, "some_new_op", {}, Authority("deployer"))) is None
    assert code_of(lambda: check_write(s, "deploy", deploy(svc("site", "shop")), Authority("deployer"))) is None


def test_a_secret_reference_outside_a_deploy_is_refused_to_non_admins() -> None:
    s = state_with(LOG=ALL)
    args = {"name": "x", "app": {"spec": {"env": [{"name": "A", "value": "${secrets.LOG}"}]}}}
    err = code_of(lambda: check_write(s, "register_app", args, Authority("deployer")))
    assert err == "SECRET_FORBIDDEN"
    assert code_of(lambda: check_write(s, "register_app", args, Authority("admin"))) is None
    assert code_of(lambda: check_write(s, "set_scaling", {"name": "x", "scaling": None}, Authority("deployer"))) is None


# --- grants: parsing and the ops that store them --------------------------------------------------------

def test_parse_grants() -> None:
    assert parse_grants({}) == NONE
    assert parse_grants({"projects": ["web", "shop", "web"]}) == {"all_projects": False, "projects": ["shop", "web"]}
    assert parse_grants({"all_projects": True}) == ALL
    for bad in ([], {"all_projects": 1}, {"projects": "shop"}, {"projects": ["Shop"]}, {"x": 1},
                {"all_projects": True, "projects": ["a"]}, {"projects": [f"p{i}" for i in range(65)]}):
        with pytest.raises(Invalid):
            parse_grants(bad)


def test_grants_are_stored_kept_on_rotation_and_replaced_by_set_secret_grants() -> None:
    s = new_state()

    def run(op: str, args: dict) -> dict:
        return apply(s, encode_entry(op, args, now=5.0))

    assert run("set_secret", {"key": "DB", "ciphertext": "c1"})["result"] == {"key": "DB", "created": True}
    assert grants_of(s["secrets"]["DB"]) == NONE  # a secret set without grants is admin-only
    assert run("set_secret", {"key": "DB", "ciphertext": "c2", "grants": SHOP})["result"]["grants"] == SHOP
    assert run("set_secret", {"key": "DB", "ciphertext": "c3"})["result"]["grants"] == SHOP  # rotation keeps
    assert run("set_secret_grants", {"key": "DB", "grants": ALL})["result"] == {"key": "DB", "grants": ALL}
    assert s["secrets"]["DB"] == {"key": "DB", "ciphertext": "c3", "created_at": 5.0, "updated_at": 5.0,
                                  "grants": ALL}
    before = repr(s)
    assert run("set_secret_grants", {"key": "NOPE", "grants": ALL})["error"]["code"] == "NOT_FOUND"
    assert run("set_secret_grants", {"key": "DB", "grants": {"all_projects": "yes", "projects": []}})["error"]
    assert run("set_secret", {"key": "DB", "ciphertext": "c4", "grants": {"projects": 3}})["error"]
    assert repr(s) == before  # refused entries change nothing
    assert "c3" not in str(s["events"])


def test_token_projects_claim_round_trips_and_is_validated() -> None:
    token, claims = auth.mint_token(KEY, role="deployer", name="ci", now=100.0, projects=["web", "shop", "web"])
    assert claims.projects == ("shop", "web")
    assert auth.verify_token(KEY, token, now=101.0).projects == ("shop", "web")
    plain, _ = auth.mint_token(KEY, role="deployer", name="ci", now=100.0)
    assert auth.verify_token(KEY, plain, now=101.0).projects is None
    for role, projects in (("admin", ["a"]), ("viewer", ["a"]), ("deployer", []), ("deployer", ["A"]),
                           ("deployer", "shop"), ("deployer", [f"p{i}" for i in range(33)])):
        with pytest.raises(Invalid):
            auth.mint_token(KEY, role=role, name="ci", now=100.0, projects=projects)
    import jwt
    forged = jwt.encode({"sub": "x", "role": "deployer", "jti": "j", "iat": 1, "projects": [1]}, auth.signing_key(
        b"s" * 32), algorithm="HS256")
    with pytest.raises(Unauthorized):
        auth.verify_token(auth.signing_key(b"s" * 32), forged, now=2.0)


def test_create_token_records_projects_only_when_scoped() -> None:
    s = new_state()
    apply(s, encode_entry("create_token", {"jti": "a", "name": "n", "role": "deployer", "iat": 1,
                                           "expires_at": None, "projects": ["shop"]}, now=1.0))
    apply(s, encode_entry("create_token", {"jti": "b", "name": "n", "role": "deployer", "iat": 1,
                                           "expires_at": None}, now=1.0))
    assert s["tokens"]["a"]["projects"] == ["shop"] and "projects" not in s["tokens"]["b"]


def test_cli_mints_a_project_scoped_token_offline(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from orca.cli import main

    secret = tmp_path / "cluster.secret"
    secret.write_text("s" * 64)
    assert main(["token", "create", "--secret-file", str(secret), "--role", "deployer", "--name", "ci",
                 "--project", "shop", "--project", "web"]) == 0
    token = capsys.readouterr().out.strip()
    assert auth.verify_token(auth.signing_key(b"s" * 64), token).projects == ("shop", "web")
    assert main(["token", "create", "--secret-file", str(secret), "--role", "admin", "--name", "ci",
                 "--project", "shop"]) == 2
    assert "only deployer tokens" in capsys.readouterr().err
