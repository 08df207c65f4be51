"""Who may reference which secret, and which projects a token may write: pure checks over plain state.

The model (why each rule exists):
- A secret carries grants: `{"all_projects": bool, "projects": [names]}`. A secret with no grants
  (one stored before grants existed, or set without any) is *admin-only*: only an admin's deploy may
  reference it. Specs already stored keep receiving every secret they reference: grants decide who may
  write a reference, not what the dispatcher sends, so upgrading never stops a running service.
- A deployer token is unscoped, or scoped to projects by its `projects` claim (minted by an admin).
  Project grants would not stop a deployer who may deploy into any project, so the check is on the
  caller, not only on the spec: an unscoped deployer may reference only secrets granted to all
  projects; a deployer scoped to P may also reference secrets granted to P, in specs of project P.
- A scoped token writes only services of its projects: the spec's project and, when the service
  exists, its current project (no moving a service out of, or into, someone else's project). Ops this
  module does not know are refused to scoped tokens (fail closed), so a new write path cannot widen a
  scope by accident.
- Admins are not limited: they grant, and may reference any secret, existing or not.
- A deployer may not reference a secret that does not exist: granted later, it would reach a spec that
  nobody authorised to read it. The refusal reads the same for a missing and an ungranted key.

Every refusal is a 403 naming the key or project; it is raised before anything is proposed, from the
leader's applied state (a grant revoked in the same instant as a deploy may miss it by one entry).

Limits: grants are checked when a reference is written, and an agent receives one secret map per node,
so revoking a grant does not reach a spec already stored. To cut off a leaked deployer token: revoke
it, purge or redeploy what it deployed, then rotate the secrets those services referenced.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from orca import spec as specs
from orca.errors import Forbidden, Invalid

__all__ = ["Authority", "parse_grants", "grants_of", "grants_text", "check_write", "check_secret_refs",
           "MAX_GRANT_PROJECTS", "NO_GRANTS"]

MAX_GRANT_PROJECTS = 64
NO_GRANTS: dict[str, Any] = {"all_projects": False, "projects": []}


@dataclass(frozen=True)
class Authority:
    """What the caller may do: its role and, for a scoped deployer, its projects (None = unscoped)."""

    role: str | None
    projects: frozenset[str] | None = None

    @classmethod
    def of(cls, claims: Any) -> Authority:
        """From verified token claims (`orca.auth.Claims`); no claims means no authority at all."""
        if claims is None:
            return cls(role=None)
        projects = getattr(claims, "projects", None)
        return cls(role=claims.role, projects=None if projects is None else frozenset(projects))

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def parse_grants(body: object) -> dict[str, Any]:
    """Validate grants from a request: `{"all_projects": bool, "projects": [DNS labels]}` (both optional)."""
    if not isinstance(body, dict):
        raise Invalid("grants: expected an object {all_projects, projects}", {"field": "grants"})
    unknown = set(body) - {"all_projects", "projects"}
    if unknown:
        name = sorted(unknown)[0]
        raise Invalid(f"grants: unknown field {name!r}", {"field": f"grants.{name}"})
    all_projects = body.get("all_projects", False)
    if not isinstance(all_projects, bool):
        raise Invalid("grants.all_projects: expected true or false", {"field": "grants.all_projects"})
    projects = body.get("projects", [])
    if not isinstance(projects, list) or len(projects) > MAX_GRANT_PROJECTS \
            or not all(specs.is_dns_label(p) for p in projects):
        raise Invalid(f"grants.projects: expected at most {MAX_GRANT_PROJECTS} project names (DNS labels)",
                      {"field": "grants.projects"})
    if all_projects and projects:
        raise Invalid("grants: all_projects and projects exclude each other", {"field": "grants"})
    return {"all_projects": all_projects, "projects": sorted(set(projects))}


def grants_of(record: Mapping[str, Any]) -> dict[str, Any]:
    """A stored secret's grants; a record from before grants existed is admin-only."""
    grants = record.get("grants")
    if not isinstance(grants, dict):
        return dict(NO_GRANTS)
    return {"all_projects": bool(grants.get("all_projects")), "projects": list(grants.get("projects") or [])}


def grants_text(grants: Mapping[str, Any]) -> str:
    """How `orca secrets ls` shows grants."""
    if grants.get("all_projects"):
        return "all projects"
    return ", ".join(grants.get("projects") or []) or "admins only"


def _may_reference(authority: Authority, record: Mapping[str, Any] | None, project: str) -> bool:
    if authority.is_admin:
        return True
    if authority.role != "deployer" or record is None:
        return False
    grants = grants_of(record)
    if grants["all_projects"]:
        return True
    return authority.projects is not None and project in authority.projects and project in grants["projects"]


def check_secret_refs(secrets: Mapping[str, Any], items: Iterable[tuple[str, dict[str, Any]]],
                      authority: Authority) -> None:
    """Raise 403 SECRET_FORBIDDEN for the first (sorted) key a spec references outside the caller's grants.

    `items` are (project, normalized spec) pairs; `secrets` is the replicated `secrets` table.
    """
    for project, spec in items:
        for key in sorted(specs.secret_refs(spec)):
            if not _may_reference(authority, secrets.get(key), project):
                raise Forbidden(f"secret {key!r} is not granted to this token for project {project!r}",
                                {"secret": key, "project": project, "service": spec.get("name")},
                                code="SECRET_FORBIDDEN")


def _service_project(state: Mapping[str, Any], name: object) -> str | None:
    svc = state["services"].get(name) if isinstance(name, str) else None
    return None if svc is None else svc.get("project", "default")


def _projects_of(state: Mapping[str, Any], op: str, args: Mapping[str, Any]) -> list[str] | None:
    """The projects a write touches; None for an op this module does not know."""
    if op == "deploy":
        out = []
        for item in args.get("services") or []:
            out.append((item.get("spec") or {}).get("project", "default"))
            current = _service_project(state, item.get("name"))
            if current is not None:
                out.append(current)
        return out
    if op in ("scale", "stop_service", "start_service", "purge_service", "promote", "rollback", "set_scaling"):
        current = _service_project(state, args.get("name"))
        return [] if current is None else [current]  # a missing service: the op answers 404 itself
    if op == "stop_project":
        return [str(args.get("project"))]
    if op == "register_webhook":
        current = _service_project(state, args.get("service"))
        return [] if current is None else [current]
    if op == "remove_webhook":
        hook = state["webhooks"].get(args.get("id")) if isinstance(args.get("id"), str) else None
        current = None if hook is None else _service_project(state, hook.get("service"))
        return [] if current is None else [current]
    return None


_REF_START = "${secrets."
_SCAN_DEPTH = 12


def _mentioned_secret(value: object, depth: int = 0) -> str | None:
    """The first `${secrets.KEY}` text anywhere in an op's args (bounded depth), or None."""
    if isinstance(value, str):
        start = value.find(_REF_START)
        if start < 0:
            return None
        refs = specs.secret_refs({"env": {"v": value[start:]}})
        return min(refs) if refs else value[start:start + 40]
    if depth >= _SCAN_DEPTH:
        return None
    items = value.values() if isinstance(value, Mapping) else value if isinstance(value, list | tuple) else ()
    for item in items:
        found = _mentioned_secret(item, depth + 1)
        if found is not None:
            return found
    return None


def check_write(state: Mapping[str, Any], op: str, args: Mapping[str, Any], authority: Authority) -> None:
    """Everything a write must pass before it is proposed: project scope, then secret references.

    Only `deploy` brings new specs today; any other op whose arguments carry a secret reference is refused
    to non-admins (fail closed), so a new way to store a spec cannot skip the grant check.
    """
    if authority.projects is not None and not authority.is_admin:
        touched = _projects_of(state, op, args)
        if touched is None:
            raise Forbidden(f"a project-scoped token may not do {op!r}", {"op": op}, code="PROJECT_FORBIDDEN")
        for project in touched:
            if project not in authority.projects:
                raise Forbidden(f"project {project!r} is outside this token's projects",
                                {"project": project, "projects": sorted(authority.projects)},
                                code="PROJECT_FORBIDDEN")
    if op == "deploy":
        items = [((item.get("spec") or {}).get("project", "default"), item.get("spec") or {})
                 for item in args.get("services") or []]
        check_secret_refs(state["secrets"], items, authority)
    elif not authority.is_admin and (key := _mentioned_secret(args)) is not None:
        raise Forbidden(f"secret {key!r} may be referenced only through a deploy", {"secret": key, "op": op},
                        code="SECRET_FORBIDDEN")
