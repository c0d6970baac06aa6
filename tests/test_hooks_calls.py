"""How the router calls plugins: each implementation on its own, decisions with a safe answer on failure, the
built-in plugins registered once from the package, each plugin's settings validated by its own model."""

from __future__ import annotations

import base64
import logging
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import pydantic
import pytest
import yaml

from router.cli import main
from router.config import ConfigError, parse_config
from router.hooks.answers import POLICY_FAILED, Accept, Authenticated, Denied, Reject
from router.hooks.calls import check_no_wrappers, decide, notify
from router.hooks.manager import DEFAULT_PLUGINS, PluginError, RouterPlugins, build_plugin_manager
from router.hooks.specs import hookimpl

ROOT = Path(__file__).parent.parent
SAMPLES = Path(__file__).parent / "sample_plugins"


def plugin(name: str, **functions: Any) -> ModuleType:
    """A plugin module made of ``functions`` (each becomes a hook implementation)."""
    module = ModuleType(name)
    for hook, function in functions.items():
        function.__name__ = hook
        setattr(module, hook, hookimpl(function))
    return module


def manager(*plugins: ModuleType) -> RouterPlugins:
    pm = RouterPlugins()
    for p in plugins:
        pm.add(p, p.__name__, "test")
    return pm


# -- notifications -------------------------------------------------------------------------------------------------
def test_a_raising_plugin_is_logged_by_name_and_the_others_still_run(caplog: pytest.LogCaptureFixture) -> None:
    told: list[tuple[str, str]] = []

    def boom(process: str) -> None:
        raise RuntimeError("boom")

    def listen(process: str) -> None:
        told.append(("listener", process))

    # pluggy calls the last registered first: the raising plugin is asked before the listening one
    pm = manager(plugin("listener", router_shutdown=listen), plugin("crasher", router_shutdown=boom))
    with caplog.at_level(logging.ERROR, logger="router.hooks"):
        notify(pm, "router_shutdown", process="serve")
    assert told == [("listener", "serve")]
    [failure] = caplog.records
    assert "plugin crasher: router_shutdown failed" in failure.getMessage()
    assert failure.exc_info is not None and str(failure.exc_info[1]) == "boom"


def test_each_implementation_gets_only_the_arguments_it_declares() -> None:
    seen: list[Any] = []
    pm = manager(plugin("few", router_association_accepted=lambda calling_ae: seen.append(calling_ae)))
    notify(pm, "router_association_accepted", calling_ae="CT1", called_ae="ROUTER", address="1.2.3.4:5", direction="x")
    assert seen == ["CT1"]


def test_hook_wrappers_are_refused_at_load() -> None:
    module = ModuleType("wrapping")

    def router_shutdown(process: str) -> Any:
        yield

    module.router_shutdown = hookimpl(wrapper=True)(router_shutdown)  # type: ignore[attr-defined]
    pm = manager(module)
    assert check_no_wrappers(pm, "router") == [
        "plugin wrapping: router_shutdown is a hook wrapper, which the router does not call"
    ]


# -- decisions -----------------------------------------------------------------------------------------------------
def policy(answer: Any) -> Any:
    def router_association_policy(calling_ae: str) -> Any:
        if isinstance(answer, Exception):
            raise answer
        return answer

    return router_association_policy


def ask(pm: RouterPlugins) -> Any:
    return decide(pm, "router_association_policy", on_error=POLICY_FAILED, calling_ae="CT1", called_ae="ROUTER",
                  address="127.0.0.1:1", config=parse_config({}, Path()))  # fmt: skip


def test_first_answer_wins_and_none_means_no_opinion() -> None:
    asked = plugin("silent", router_association_policy=policy(None))
    assert ask(manager(asked)) is None
    pm = manager(plugin("refuser", router_association_policy=policy(Reject("no"))), asked)
    assert ask(pm) == Reject("no")  # "silent" (registered last) was asked first and had no opinion
    pm = manager(plugin("refuser", router_association_policy=policy(Reject("no"))),
                 plugin("admitter", router_association_policy=policy(Accept())))  # fmt: skip
    assert ask(pm) == Accept(), "the refuser after the admitter is never asked"


def test_a_raising_decision_takes_the_safe_answer(caplog: pytest.LogCaptureFixture) -> None:
    pm = manager(plugin("admitter", router_association_policy=policy(Accept())),
                 plugin("crasher", router_association_policy=policy(KeyError("x"))))  # fmt: skip
    with caplog.at_level(logging.ERROR, logger="router.hooks"):
        answer = ask(pm)
    assert answer == POLICY_FAILED and (answer.result, answer.source, answer.diagnostic) == (2, 1, 1)
    assert "plugin crasher: router_association_policy failed" in caplog.records[0].getMessage()


def test_a_rejection_must_be_one_ps3_8_allows() -> None:
    assert Reject("ok", 1, 3, 2).diagnostic == 2  # service-provider (presentation): local-limit-exceeded
    with pytest.raises(ValueError, match="not valid for source 2"):
        Reject("bad", 1, 2, 7)
    with pytest.raises(ValueError, match="neither 1"):
        Reject("bad", 3)


# -- the built-in access plugin ------------------------------------------------------------------------------------
def test_built_in_policy_checks_called_then_calling_ae() -> None:
    pm = build_plugin_manager()
    config = parse_config({"dicom": {"allowed_calling_aets": ["CT1"]}}, Path())

    def policy_for(calling: str, called: str) -> Any:
        return decide(pm, "router_association_policy", on_error=POLICY_FAILED, calling_ae=calling, called_ae=called,
                      address="127.0.0.1:1", config=config)  # fmt: skip

    assert policy_for("CT1", "ROUTER") is None
    assert (policy_for("OTHER", "ROUTER").diagnostic, policy_for("CT1", "ELSE").diagnostic) == (3, 7)
    assert policy_for("OTHER", "ELSE").diagnostic == 7, "pynetdicom answered called-AE first when both were wrong"
    open_config = parse_config({"dicom": {"check_called_aet": False}}, Path())
    assert decide(pm, "router_association_policy", on_error=POLICY_FAILED, calling_ae="ANY", called_ae="ELSE",
                  address="", config=open_config) is None  # fmt: skip


def test_built_in_authentication() -> None:
    pm = build_plugin_manager()
    config = parse_config({"http": {"auth": {"username": "ann", "password": "secret-pw"}}}, Path())

    def login(header: str, cfg: Any = config) -> Any:
        return decide(pm, "router_authenticate", on_error=Denied("failed"), authorization=header, address="",
                      method="GET", path="/", config=cfg)  # fmt: skip

    def basic(user: str, password: str) -> str:
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    assert login(basic("ann", "secret-pw")) == Authenticated("ann", "basic")
    assert login(basic("ann", "wrong-pw")) == Denied("wrong user name or password", "ann")
    assert login("") == Denied("no credentials")
    assert login("Bearer x" * 3).reason == "Bearer credentials are not accepted"
    assert login("", parse_config({}, Path())) is None, "no http.auth: no opinion"


# -- built-in plugins, entry points, plugin_modules ----------------------------------------------------------------
def test_built_in_plugins_come_from_the_package_once() -> None:
    pm = build_plugin_manager()
    names = [name for name, _plugin in pm.list_name_plugin()]
    built_in = ["access", "audit", "coerce", "destinations", "forward", "metrics", "resend", "transcode"]
    assert names[: len(DEFAULT_PLUGINS)] == built_in
    assert len({id(p) for _n, p in pm.list_name_plugin()}) == len(names)
    assert all(pm.origins[n].startswith("built-in (plugins.") for n in names[: len(DEFAULT_PLUGINS)])
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    listed = project.get("entry-points", {}).get("router", {})
    assert not set(listed.values()) & set(DEFAULT_PLUGINS), "a built-in plugin in the entry point group: twice"


def test_plugin_modules_by_name_or_file(tmp_path: Path) -> None:
    config = parse_config({"plugin_modules": [str(SAMPLES / "broken.py")]}, tmp_path)
    pm = build_plugin_manager(config)
    assert pm.origins["broken"] == f"plugin_modules ({SAMPLES / 'broken.py'})"
    config = parse_config({"plugin_modules": ["plugins.coerce"]}, tmp_path)
    assert len(build_plugin_manager(config).get_plugins()) == len(pm.get_plugins()) - 1, "already registered"
    with pytest.raises(PluginError, match=r"plugin_modules: no\.such\.module: No module named"):
        build_plugin_manager(parse_config({"plugin_modules": ["no.such.module"]}, tmp_path))


def test_two_plugins_may_not_share_a_name(tmp_path: Path) -> None:
    (tmp_path / "coerce.py").write_text("")
    with pytest.raises(PluginError, match="two plugins are named 'coerce'"):
        build_plugin_manager(parse_config({"plugin_modules": ["./coerce.py"]}, tmp_path))


# -- plugin settings -----------------------------------------------------------------------------------------------
def recorder_config(tmp_path: Path, **settings: Any) -> dict[str, Any]:
    return {"plugin_modules": [str(SAMPLES / "recorder.py"), str(SAMPLES / "broken.py")],
            "plugins": {"recorder": settings} if settings else {}}  # fmt: skip


def test_settings_are_validated_by_the_plugins_model(tmp_path: Path) -> None:
    config = parse_config(recorder_config(tmp_path, events="e.jsonl", reject_calling=["X"]), tmp_path)
    settings = build_plugin_manager(config).settings["recorder"]
    assert isinstance(settings, pydantic.BaseModel)
    assert settings.model_dump() == {"events": "e.jsonl", "reject_calling": ["X"],
                                     "reject_reason": "refused by the recorder's policy"}  # fmt: skip


@pytest.mark.parametrize(
    ("plugins", "problems"),
    [
        ({}, ["plugins.recorder.events: Field required"]),  # required settings are asked for
        ({"recorder": {"events": "e", "reject_calling": "X", "colour": 1}},
         ["plugins.recorder.reject_calling: Input should be a valid list (got 'X')",
          "plugins.recorder.colour: unknown key"]),
        ({"recorder": {"events": "e"}, "broken": {"a": 1}}, ["plugins.broken: this plugin takes no settings"]),
        ({"recorder": {"events": "e"}, "sitelog": {}},
         ["plugins.sitelog: no plugin of this name is loaded (see `router plugins`)"]),
    ],
)  # fmt: skip
def test_settings_problems_are_reported_like_configuration_errors(
    tmp_path: Path, plugins: dict[str, Any], problems: list[str]
) -> None:
    config = parse_config({**recorder_config(tmp_path), "plugins": plugins}, tmp_path, tmp_path / "router.yaml")
    with pytest.raises(ConfigError) as refused:
        build_plugin_manager(config)
    assert str(refused.value).splitlines() == [f"{tmp_path / 'router.yaml'}: invalid configuration", *problems]


def test_the_old_list_of_modules_says_where_it_went() -> None:
    with pytest.raises(ConfigError, match="list extra plugin modules under plugin_modules"):
        parse_config({"plugins": ["my.module"]}, Path())


def test_router_refuses_to_start_with_bad_plugin_settings(tmp_path: Path) -> None:
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump({**recorder_config(tmp_path), "data_dir": "var"}))
    done = subprocess.run([sys.executable, "-m", "router", "serve", "--config", str(path)], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert f"router: {path}: invalid configuration\nplugins.recorder.events: Field required" in done.stderr
    assert not (tmp_path / "var").exists(), "nothing started"


# -- router plugins ------------------------------------------------------------------------------------------------
def test_router_plugins_lists_origin_hooks_and_stages(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump({**recorder_config(tmp_path, events="e.jsonl")}))
    assert main(["plugins", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "coerce: built-in (plugins.coerce)\n  hooks: router_stages\n  stages: coerce\n" in out
    assert "access: built-in (plugins.access)\n  hooks: router_association_policy, router_authenticate\n" in out
    assert f"recorder: plugin_modules ({SAMPLES / 'recorder.py'})\n" in out
    assert "  settings: plugins.recorder (Settings)\n" in out
    assert "broken: plugin_modules" in out and "  hooks: router_association_accepted, router_hl7_acknowledged" in out


def test_third_party_entry_points_are_loaded_and_never_shadow_a_built_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    dist = tmp_path / "router_sitelog-1.2.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: router-sitelog\nVersion: 1.2\n")
    (dist / "entry_points.txt").write_text(
        "[router]\nsitelog = router_sitelog_plugin\ncoerce = router_sitelog_plugin\n"
    )
    (tmp_path / "router_sitelog_plugin.py").write_text(
        "from router.hooks.specs import hookimpl\n\n\n@hookimpl\ndef router_shutdown(process):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="router.hooks.manager"):
        pm = build_plugin_manager()
    assert pm.origins["sitelog"] == "entry point (router-sitelog 1.2)"
    assert pm.origins["coerce"] == "built-in (plugins.coerce)"
    assert "entry point plugin coerce (router_sitelog_plugin) is not loaded: a built-in (plugins.coerce) plugin" in (
        caplog.text
    )
