"""Rule files: ``/api/rules`` (list, read, save, history, revert).

A save (``PUT /api/rules/{file}``, the body is the YAML text) is checked first, with every other rule file as it
is, exactly as ``router rules check`` would (``router.intake.dryrun.load_with_edits``): problems are answered 422
as data (``file``, ``line``, ``message``) and nothing is written. A good one keeps the file's previous version
(``router.store.rule_history``), is written atomically (temp file, fsync, rename, folder fsync) and read at once,
so the next object is routed by it. Saves are made one at a time.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from starlette.responses import PlainTextResponse

from router.intake.dryrun import FILE_NAME, load_with_edits, problem_json
from router.listeners.http.api.endpoint import ApiError, Call, Endpoint, Param
from router.listeners.http.api.services import ApiServices
from router.rules.loader import rule_files
from router.store import files
from router.store.rule_history import keep_version, version_text, versions

YAML_BODY = {"required": True, "content": {"application/yaml": {"schema": {"type": "string"}}}}
FILE = Param("file", "rule file name, e.g. 10-ct.yaml", where="path", max_length=200)
VERSION = Param("version", "a version number from the history", kind="integer", where="path", minimum=1,
                maximum=2**62)  # fmt: skip


def check_name(name: str) -> str:
    if not FILE_NAME.match(name):
        raise ApiError(400, "a rule file name is letters, digits, . _ - and ends in .yaml or .yml")
    return name


def read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ApiError(409, f"{path.name}: cannot be read: {exc}") from None


class RuleFiles:
    """Reading and saving the files of ``rules_dir``: the handlers of ``/api/rules``."""

    def __init__(self, services: ApiServices) -> None:
        self.services = services
        self.folder = services.config.rules_dir
        self._saving = threading.Lock()

    def store(self, name: str, text: str, call: Call, action: str = "rules.saved") -> dict[str, Any]:
        """Check ``text`` with the other files, keep the version it replaces, write it, reload; 422 for problems."""
        services = self.services
        result = load_with_edits(self.folder, {name: text}, services.stages, services.config)
        if result.problems:
            raise ApiError(422, f"{len(result.problems)} problem(s): nothing was saved",
                           problems=[problem_json(p) for p in result.problems])  # fmt: skip
        with self._saving:
            path = self.folder / name
            before = read_text(path)
            if before == text:
                return {"file": name, "saved": False, "version": None, "rules": len(services.rules.current.rules)}
            version = keep_version(services.engine, name, before or "", call.user)
            self.folder.mkdir(parents=True, exist_ok=True)
            files.commit_file(files.write_temp(self.folder, text.encode("utf-8")), path)
            services.rules.reload_if_changed()
        services.changed(call.user, call.identity.role if call.identity else "", action, name, call.address,
                         kept_version=version, problems=list(services.rules.last_problems))  # fmt: skip
        return {"file": name, "saved": True, "version": version, "rules": len(services.rules.current.rules),
                "problems": [problem_json(p) for p in services.rules.last_problems]}  # fmt: skip

    def listing(self, call: Call) -> dict[str, Any]:
        current = self.services.rules.current
        counted = {f: sum(1 for r in current.rules if r.where.split(":")[0] == f) for f in current.files}
        return {"items": [{"file": p.name, "size": p.stat().st_size, "rules": counted.get(p.name)}
                          for p in rule_files(self.folder)],
                "problems": [problem_json(p) for p in self.services.rules.last_problems]}  # fmt: skip

    def read(self, call: Call) -> PlainTextResponse:
        name = check_name(call.params["file"])
        text = read_text(self.folder / name)
        if text is None:
            raise ApiError(404, f"no rule file {name}")
        return PlainTextResponse(text, media_type="application/yaml")

    def save(self, call: Call) -> dict[str, Any]:
        name = check_name(call.params["file"])
        try:
            text = call.body.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(400, "the body is not UTF-8 text") from None
        return self.store(name, text, call)

    def history(self, call: Call) -> dict[str, Any]:
        name = check_name(call.params["file"])
        return {"file": name, "items": versions(self.services.engine, name)}

    def _version(self, call: Call) -> tuple[str, str]:
        name = check_name(call.params["file"])
        text = version_text(self.services.engine, name, call.params["version"])
        if text is None:
            raise ApiError(404, f"{name} has no version {call.params['version']}")
        return name, text

    def old_version(self, call: Call) -> PlainTextResponse:
        return PlainTextResponse(self._version(call)[1], media_type="application/yaml")

    def revert(self, call: Call) -> dict[str, Any]:
        name, text = self._version(call)
        return {**self.store(name, text, call, "rules.reverted"), "reverted_to": call.params["version"]}

    def endpoints(self) -> list[Endpoint]:
        text = {200: "the YAML text", 404: "no such file"}
        return [
            Endpoint("GET", "/api/rules", "The rule files, their rules, the problems of the last reload",
                     self.listing, tag="rules"),
            Endpoint("GET", "/api/rules/{file}", "A rule file's YAML text", self.read, params=(FILE,),
                     responses=text, tag="rules", media="application/yaml"),
            Endpoint("PUT", "/api/rules/{file}", "Save a rule file (the body is its YAML): checked, kept, reloaded",
                     self.save, role="admin", params=(FILE,), body=YAML_BODY,
                     responses={200: "saved and in force", 422: "problems (file:line: message); nothing written"},
                     tag="rules"),
            Endpoint("GET", "/api/rules/{file}/history", "The file's previous versions, newest first", self.history,
                     params=(FILE,), tag="rules"),
            Endpoint("GET", "/api/rules/{file}/history/{version}", "One previous version's text", self.old_version,
                     params=(FILE, VERSION), responses=text, tag="rules", media="application/yaml"),
            Endpoint("POST", "/api/rules/{file}/history/{version}/revert", "Save a previous version again (checked)",
                     self.revert, role="admin", params=(FILE, VERSION),
                     responses={404: "no such version", 422: "problems; nothing written"}, tag="rules"),
        ]  # fmt: skip


def make_endpoints(services: ApiServices) -> list[Endpoint]:
    return RuleFiles(services).endpoints()
