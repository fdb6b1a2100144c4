"""IAM, as the fake plays it:

    POST /v3/auth/tokens    project-scoped tokens, by password or by assuming an agency;
                            201 with the token in ``X-Subject-Token``
    GET  /v3/auth/projects  the projects the token may use (X-Auth-Token)
    GET  /v3/projects       the account's projects (AK/SK signature or a token); ``?name=``

Projects are the dataset's (the region's project and its sub-projects), one of another region
and one that CPH refuses, as a real account has. A script (``ServerConfig.script``) makes IAM
answer 429 or 5xx first: keys ``iam:tokens`` and ``iam:projects``, outcomes ``throttle`` and
``http_5xx``.
"""

from __future__ import annotations

import datetime as dt
import os
from collections import Counter
from collections.abc import Mapping
from http import HTTPStatus

import orjson

from collector.fake.faults import FaultPlan, Outcome
from collector.fake.gateway import MSG, Gateway, error
from collector.fake.model import Answer, Exchange, ServerConfig

TOKENS_PATH = "/v3/auth/tokens"
PROJECT_PATHS = ("/v3/auth/projects", "/v3/projects")
SCRIPTED = {Outcome.HTTP_500: 500, Outcome.HTTP_502: 502, Outcome.HTTP_503: 503,
            Outcome.HTTP_504: 504}


def iam_error(status: int, message: str) -> Answer:
    """IAM's own error shape: {"error": {"code", "message", "title"}}."""
    body = {"error": {"code": status, "message": message, "title": HTTPStatus(status).phrase}}
    return Answer(status, orjson.dumps(body), backend=False)


def _iso(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"


class Iam:
    """Issues tokens the gateway then accepts until they expire."""

    def __init__(self, config: ServerConfig, gateway: Gateway, projects: frozenset[str],
                 listed: list[dict[str, object]]) -> None:
        self.config = config
        self.gateway = gateway
        self.projects = projects
        self.listed = listed + config.iam_extra_projects
        self.faults = FaultPlan(None, config.script)
        self.attempts: Counter[str] = Counter()

    def handles(self, path: str) -> bool:
        """True for the paths IAM answers."""
        return path == TOKENS_PATH or path in PROJECT_PATHS

    def answer(self, ex: Exchange, path: str, query: Mapping[str, str],
               headers: Mapping[str, str], body: bytes) -> Answer:
        """A token (201 with X-Subject-Token), the projects, or IAM's error."""
        key = "iam:projects" if path in PROJECT_PATHS else "iam:tokens"
        self.attempts[key] += 1
        ex.attempt = self.attempts[key]
        outcome = self.faults.outcome(key, ex.attempt)
        if outcome is Outcome.THROTTLE:
            ex.outcome = "throttle"
            return self.gateway.throttled(ex, self.config.rate_limit or 10, backend=False)
        if outcome in SCRIPTED:
            ex.outcome = outcome.value
            return iam_error(SCRIPTED[outcome], "The service is unavailable.")
        if path in PROJECT_PATHS:
            return self._projects(ex, query, headers, body)
        ex.outcome = "iam_token"
        if ex.method != "POST":
            return error(ex, 404, "APIGW.0101", MSG["APIGW.0101"], backend=False)
        try:
            auth = orjson.loads(body)["auth"]
            methods, scope = auth["identity"]["methods"], auth["scope"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return iam_error(400, "The request body is invalid.")
        refused = self._refusal(ex, methods, auth, headers)
        if refused is not None:
            return refused
        project = scope.get("project", {}).get("id") if isinstance(scope, dict) else None
        if project is not None and project not in self.projects:
            return iam_error(400, f"Could not find project: {project}.")
        return self._issue(ex, methods, project)

    def _projects(self, ex: Exchange, query: Mapping[str, str], headers: Mapping[str, str],
                  body: bytes) -> Answer:
        ex.outcome = "iam_projects"
        if ex.method != "GET":
            return error(ex, 404, "APIGW.0101", MSG["APIGW.0101"], backend=False)
        refused = self.gateway.admit(ex, query, headers, body)
        if refused is not None:
            if refused.status == 429:
                return refused
            return iam_error(401, "The request you have made requires authentication.")
        projects = [p for p in self.listed
                    if "name" not in query or p["name"] == query["name"]]
        return Answer(200, orjson.dumps({"projects": projects, "links": {
            "self": f"https://iam.example{ex.path}", "next": None, "previous": None}}),
            backend=False)

    def _refusal(self, ex: Exchange, methods: object, auth: dict[str, object],
                 headers: Mapping[str, str]) -> Answer | None:
        identity = auth["identity"]
        assert isinstance(identity, dict)
        if methods == ["password"]:
            user = identity["password"]["user"]
            key = f"{user.get('domain', {}).get('name')}/{user.get('name')}"
            if self.config.iam_users.get(key) != user.get("password"):
                return iam_error(401, "The username or password is wrong.")
            return None
        if methods == ["assume_role"]:
            role = identity["assume_role"]
            if self.gateway.token_problem(headers.get("x-auth-token"), ex.arrived) is not None:
                return iam_error(401, "The request you have made requires authentication.")
            if f"{role.get('domain_name')}/{role.get('agency_name')}" not in self.config.agencies:
                return iam_error(404, "Could not find agency.")
            return None
        return iam_error(400, "The identity method is not supported.")

    def _issue(self, ex: Exchange, methods: object, project: str | None) -> Answer:
        token = "MII" + os.urandom(24).hex()
        self.gateway.tokens.add(token)
        self.gateway.issued[token] = ex.arrived + self.config.iam_token_ttl
        now = dt.datetime.now(dt.UTC)
        expires = now + dt.timedelta(seconds=self.config.iam_token_ttl)
        doc = {"token": {"methods": methods, "issued_at": _iso(now), "expires_at": _iso(expires),
                         **({"project": {"id": project}} if project else {})}}
        answer = Answer(201, orjson.dumps(doc), backend=False)
        answer.subject_token = token
        return answer
