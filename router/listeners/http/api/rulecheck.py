"""``POST /api/rules/{file}/check``: check an edited rule file without saving it, exactly as a save would (with
every other rule file as it is, ``router.intake.dryrun.load_with_edits``): the problems as data (``file``,
``line``, ``message``), 200 either way. The console's rule editor shows them at their line before saving."""

from __future__ import annotations

from typing import Any

from router.intake.dryrun import load_with_edits, problem_json
from router.listeners.http.api.endpoint import ApiError, Call, Endpoint
from router.listeners.http.api.rules import FILE, YAML_BODY, check_name
from router.listeners.http.api.services import ApiServices


def make_endpoints(services: ApiServices) -> list[Endpoint]:
    def check(call: Call) -> dict[str, Any]:
        name = check_name(call.params["file"])
        try:
            text = call.body.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(400, "the body is not UTF-8 text") from None
        result = load_with_edits(services.config.rules_dir, {name: text}, services.stages, services.config)
        own = sum(1 for r in result.ruleset.rules if r.where.split(":")[0] == name)
        return {"file": name, "ok": not result.problems, "rules": own,
                "problems": [problem_json(p) for p in result.problems]}  # fmt: skip

    return [
        Endpoint("POST", "/api/rules/{file}/check", "Check an edited rule file (the body is its YAML) without "
                 "saving it: {ok, rules, problems}", check, params=(FILE,), body=YAML_BODY, tag="rules"),
    ]  # fmt: skip
