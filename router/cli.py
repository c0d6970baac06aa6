"""The ``router`` command: serve, rules check|test, plugins, queue list|retry|purge, audit status,
users add|list|remove|passwd|token, db upgrade|current|history, echo|find|move|get|send, import, export,
print."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from router.cli_db import add_db_commands
from router.cli_export import add_export_command
from router.cli_import import add_import_command
from router.cli_print import add_print_command
from router.cli_users import add_users_commands
from router.config import ConfigError, RouterConfig, load_config
from router.store.models import JobState
from router.store.schema import SchemaMismatch

if TYPE_CHECKING:
    from router.intake.stage import Stage
    from router.outbox.queue import Outbox
    from router.query.model import InfoModel

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2


def _config(args: argparse.Namespace) -> RouterConfig:
    return load_config(args.config)


def cmd_serve(args: argparse.Namespace) -> int:
    from router.app import Router, StartupError
    from router.logs import configure_logging

    cfg = _config(args)
    configure_logging(cfg.log_level)
    try:
        Router(cfg).serve_forever()
    except StartupError as exc:
        print(f"router: cannot start: {exc}", file=sys.stderr)
        return EXIT_PROBLEMS
    return EXIT_OK


def _stages(cfg: RouterConfig) -> dict[str, Stage]:
    from router.hooks.manager import build_plugin_manager, collect_stages

    return collect_stages(build_plugin_manager(cfg))


def cmd_rules_check(args: argparse.Namespace) -> int:
    from router.rules.loader import load_rules

    cfg = _config(args)
    rules_dir = Path(args.dir).resolve() if args.dir else cfg.rules_dir
    if args.dir and not rules_dir.exists():  # named on the command line: a typo, not "no rules"
        print(f"router: {rules_dir}: no such folder", file=sys.stderr)
        return EXIT_USAGE
    result = load_rules(rules_dir, _stages(cfg), cfg)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for problem in result.problems:
        print(problem)
    if result.problems:
        print(f"{len(result.problems)} problem(s) in {rules_dir}", file=sys.stderr)
        return EXIT_PROBLEMS
    print(f"ok: {len(result.ruleset.rules)} rule(s) in {len(result.ruleset.files)} file(s) in {rules_dir}")
    return EXIT_OK


def cmd_rules_test(args: argparse.Namespace) -> int:
    from router.intake.dryrun import NotReadable, dry_run, read_object
    from router.rules.loader import load_rules

    cfg = _config(args)
    stages = _stages(cfg)
    rules_dir = Path(args.rules).resolve() if args.rules else cfg.rules_dir
    loaded = load_rules(rules_dir, stages, cfg)
    for problem in loaded.warnings + loaded.problems:
        print(f"warning: {problem}", file=sys.stderr)
    try:
        env = read_object(Path(args.file).read_bytes(), cfg, args.calling_ae, args.called_ae)
    except (NotReadable, OSError) as exc:
        print(f"{args.file}: {exc}", file=sys.stderr)
        return EXIT_PROBLEMS
    if env.kind == "hl7":
        print(f"message: {env.message.message_type} {env.message.control_id} from {env.source.calling_ae or '-'}")
    else:
        h = env.header
        print(
            f"object: SOP Instance {h.get('SOPInstanceUID', '?')} class {h.get('SOPClassUID', '?')} "
            f"({getattr(h.get('SOPClassUID'), 'name', '')}), calling AE {args.calling_ae or '-'}"
        )
    run = dry_run(env, loaded, stages, cfg)
    if run.error:
        print(f"a stage would fail: {run.error}")
        return EXIT_PROBLEMS
    result = run.result
    if not result.rules:
        print(
            f"no rule matches ({len(loaded.ruleset.rules)} rule(s) checked): "
            "the object would be stored and nothing else"
        )
    for rule in result.rules:
        print(f"rule {rule.name} ({rule.where}) matches{' and stops here' if rule.stop else ''}")
        for step in (s for s in result.steps if s.rule == rule.name):
            print(f"  [{step.where}] {step.text}")
    print("dry run: nothing was stored, changed or sent")
    return EXIT_OK


def cmd_plugins(args: argparse.Namespace) -> int:
    """Every loaded plugin: where it comes from, the hooks it implements, the stages it provides."""
    from router.hooks.manager import build_plugin_manager, stages_by_plugin

    pm = build_plugin_manager(_config(args))
    stages = stages_by_plugin(pm)
    for name, plugin in pm.list_name_plugin():
        print(f"{name}: {pm.origins.get(name, '?')}")
        hooks = sorted(caller.name for caller in pm.get_hookcallers(plugin) or [])
        print(f"  hooks: {', '.join(hooks) or '-'}")
        if stages.get(name):
            print(f"  stages: {', '.join(stages[name])}")
        if name in pm.settings:
            print(f"  settings: plugins.{name} ({type(pm.settings[name]).__name__})")
    return EXIT_OK


def _outbox(cfg: RouterConfig) -> Outbox:
    from router.outbox.queue import Outbox
    from router.store.db import make_engine

    return Outbox(make_engine(cfg.effective_database_url), cfg.forward, cfg.data_dir)


def cmd_queue_list(args: argparse.Namespace) -> int:
    from router.outbox.jobs import JobKind

    outbox = _outbox(_config(args))
    counts = outbox.counts()
    if not counts:
        print("the queue is empty")
        return EXIT_OK
    print("peer                 pending  inflight  committing      done      dead")
    for peer in sorted({p for p, _ in counts}):
        row = [counts.get((peer, s), 0) for s in JobState.ALL]
        print(f"{peer:<20} {row[0]:>8} {row[1]:>9} {row[2]:>11} {row[3]:>9} {row[4]:>9}")
    jobs = outbox.list(state=args.state, peer=args.peer, limit=args.limit)
    if args.state or args.peer:
        print()
        print(
            f"{'id':>8}  {'state':<10} {'peer':<12} {'kind':<15} {'tries':>5}  {'next attempt':<19}  "
            "object / last error"
        )
        for j in jobs:
            what = j.sop_class_uid if j.kind == JobKind.HL7 else j.sop_uid  # an HL7 job: its message type
            print(
                f"{j.id:>8}  {j.state:<10} {j.peer:<12} {j.kind:<15} {j.attempts:>5}  "
                f"{j.next_attempt_at:%Y-%m-%d %H:%M:%S}  {what}  {j.last_error}"
            )
        total = sum(n for (peer, state), n in counts.items()
                    if (not args.peer or peer == args.peer) and (not args.state or state == args.state))  # fmt: skip
        if total > len(jobs):
            print(f"(the newest {len(jobs)} of {total}; --limit N shows more)")
    return EXIT_OK


def cmd_queue_retry(args: argparse.Namespace) -> int:
    if not args.ids and not args.all:
        print("name job ids, or --all for every dead job", file=sys.stderr)
        return EXIT_USAGE
    n = _outbox(_config(args)).retry(ids=args.ids, peer=args.peer, all_dead=args.all)
    print(f"requeued {n} job(s)")
    return EXIT_OK


def cmd_queue_purge(args: argparse.Namespace) -> int:
    states = [s for s, on in (("done", args.done), ("dead", args.dead)) if on]
    if not states:
        print("say what to purge: --done and/or --dead", file=sys.stderr)
        return EXIT_USAGE
    n = _outbox(_config(args)).purge(states, peer=args.peer)
    print(f"purged {n} job(s)")
    return EXIT_OK


def cmd_audit_status(args: argparse.Namespace) -> int:
    """The audit trail's spool depth per repository (plugins.audit)."""
    from plugins.audit.settings import Settings
    from plugins.audit.status import status_lines
    from router.hooks.manager import build_plugin_manager

    cfg = _config(args)
    settings = build_plugin_manager(cfg).settings.get("audit")
    if not isinstance(settings, Settings):
        print("the audit plugin is not loaded", file=sys.stderr)
        return EXIT_PROBLEMS
    base = cfg.source.parent if cfg.source else Path.cwd()
    for line in status_lines(settings.resolved(base), cfg.data_dir):
        print(line)
    return EXIT_OK


# -- DICOM SCU commands: thin layers over router.scu.commands ------------------------------------------------------
MODELS = {"patient": "PATIENT_ROOT", "study": "STUDY_ROOT", "psonly": "PATIENT_STUDY_ONLY"}


def _scu_failure(exc: Exception) -> int:
    print(f"router: {exc}", file=sys.stderr)
    return EXIT_PROBLEMS


def cmd_echo(args: argparse.Namespace) -> int:
    import time

    from router.scu import commands as qr_scu
    from router.scu.association import AssociationFailed

    cfg = _config(args)
    try:
        peer = qr_scu.peer_named(cfg, args.peer)
        started = time.monotonic()
        status = qr_scu.echo(cfg, peer)
    except AssociationFailed as exc:
        return _scu_failure(exc)
    ms = (time.monotonic() - started) * 1000
    print(f"{args.peer} ({peer.ae_title}@{peer.host}:{peer.port}): C-ECHO status 0x{status:04X} in {ms:.0f} ms")
    return EXIT_OK if status == 0 else EXIT_PROBLEMS


def _model(args: argparse.Namespace) -> InfoModel:
    from router.query import model

    chosen: InfoModel = getattr(model, MODELS[args.model])
    return chosen


def cmd_find(args: argparse.Namespace) -> int:
    import json

    from router.scu import commands as qr_scu
    from router.scu.association import AssociationFailed

    cfg = _config(args)
    level = args.level.upper()
    try:
        defaults = [] if args.no_defaults else qr_scu.DEFAULT_KEYS.get(level, [])
        identifier = qr_scu.build_identifier(level, args.key or [], defaults)
        peer = qr_scu.peer_named(cfg, args.peer)
        outcome = qr_scu.FindOutcome()
        matches = list(qr_scu.find(cfg, peer, _model(args), identifier, outcome))
    except (qr_scu.BadKey, AssociationFailed) as exc:
        return _scu_failure(exc)
    if args.json:
        print(json.dumps([m.to_json_dict() for m in matches], indent=1, ensure_ascii=False))
    else:
        tags = [int(e.tag) for e in identifier if e.keyword not in ("QueryRetrieveLevel", "SpecificCharacterSet")]
        if matches:
            print(qr_scu.table(matches, tags))
    print(f"{outcome.matches} match(es), final status 0x{outcome.status:04X}", file=sys.stderr)
    return EXIT_OK if outcome.status == 0 else EXIT_PROBLEMS


def _retrieve_report(what: str, outcome: object) -> int:
    from router.scu.commands import RetrieveOutcome

    assert isinstance(outcome, RetrieveOutcome)
    print(
        f"{what}: {outcome.completed} completed, {outcome.failed} failed, {outcome.warning} warning; "
        f"final status 0x{outcome.status:04X}"
    )
    for uid in outcome.failed_uids:
        print(f"failed: {uid}")
    return EXIT_OK if outcome.status == 0 else EXIT_PROBLEMS


def cmd_move(args: argparse.Namespace) -> int:
    from router.scu import commands as qr_scu
    from router.scu.association import AssociationFailed

    cfg = _config(args)
    try:
        identifier = qr_scu.build_identifier(args.level.upper(), args.key or [])
        peer = qr_scu.peer_named(cfg, args.peer)
        progress = qr_scu.Progress(f"C-MOVE to {args.to}", enabled=not args.quiet)
        outcome = qr_scu.move(cfg, peer, args.to, _model(args), identifier, progress)
    except (qr_scu.BadKey, AssociationFailed) as exc:
        return _scu_failure(exc)
    return _retrieve_report(f"C-MOVE from {args.peer} to {args.to}", outcome)


def cmd_get(args: argparse.Namespace) -> int:
    from router.scu import commands as qr_scu
    from router.scu.association import AssociationFailed

    cfg = _config(args)
    try:
        identifier = qr_scu.build_identifier(args.level.upper(), args.key or [])
        peer = qr_scu.peer_named(cfg, args.peer)
        progress = qr_scu.Progress("C-GET", enabled=not args.quiet)
        out = Path(args.out)
        outcome = qr_scu.get(cfg, peer, _model(args), identifier, out, progress)
    except (qr_scu.BadKey, AssociationFailed) as exc:
        return _scu_failure(exc)
    return _retrieve_report(f"C-GET from {args.peer} into {args.out}", outcome)


def cmd_send(args: argparse.Namespace) -> int:
    from router.scu import commands as qr_scu
    from router.scu.association import AssociationFailed

    cfg = _config(args)
    files = list(qr_scu.dicom_files(Path(p) for p in args.files))
    if not files:
        print("no files to send", file=sys.stderr)
        return EXIT_USAGE
    try:
        peer = qr_scu.peer_named(cfg, args.peer)
        progress = qr_scu.Progress(f"C-STORE to {args.peer}", enabled=not args.quiet)
        outcome = qr_scu.send(cfg, peer, files, progress, report=lambda p, m: print(f"{p}: {m}", file=sys.stderr))
    except AssociationFailed as exc:
        return _scu_failure(exc)
    print(f"sent {outcome.sent} of {len(files)} file(s) to {args.peer}, {len(outcome.failed)} failed")
    return EXIT_OK if not outcome.failed else EXIT_PROBLEMS


def _add_qr_options(p: argparse.ArgumentParser, level: str) -> None:
    p.add_argument("peer", help="a peer name from the configuration (or its AE title)")
    p.add_argument("--model", choices=sorted(MODELS), default="study", help="information model (default: study root)")
    p.add_argument("--level", default=level, type=str.upper, choices=["PATIENT", "STUDY", "SERIES", "IMAGE"])
    p.add_argument(
        "-k", "--key", action="append", metavar="KEY[=VALUE]",
        help="Keyword=value, Keyword (a return key), gggg,eeee=value or Sequence.Keyword=value; repeatable",
    )  # fmt: skip


def version_line() -> str:
    """``router X.Y.Z (pydicom A, pynetdicom B, Python C)``: what a bug report needs first."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import router

    def of(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "not installed"

    return (
        f"router {router.__version__} (pydicom {of('pydicom')}, pynetdicom {of('pynetdicom')}, "
        f"Python {platform.python_version()})"
    )


class _Version(argparse.Action):
    """``--version``, with the libraries' versions looked up only when asked for."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the versions of the router and its DICOM libraries")

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        print(version_line())
        parser.exit()


def _add_queue_commands(sub: Any) -> tuple[argparse.ArgumentParser, ...]:
    queue = sub.add_parser("queue", help="the forward queue").add_subparsers(dest="queue_cmd", required=True)
    ls = queue.add_parser("list", help="counts per peer and state; jobs with --state/--peer")
    ls.add_argument("--state", choices=list(JobState.ALL))
    ls.add_argument("--peer")
    ls.add_argument("--limit", type=int, default=50)
    ls.set_defaults(func=cmd_queue_list)
    retry = queue.add_parser("retry", help="requeue dead jobs (attempts start again)")
    retry.add_argument("ids", nargs="*", type=int)
    retry.add_argument("--all", action="store_true", help="every dead job")
    retry.add_argument("--peer")
    retry.set_defaults(func=cmd_queue_retry)
    purge = queue.add_parser("purge", help="delete finished jobs")
    purge.add_argument("--done", action="store_true")
    purge.add_argument("--dead", action="store_true")
    purge.add_argument("--peer")
    purge.set_defaults(func=cmd_queue_purge)
    return ls, retry, purge


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="router", description="HL7 + DICOM routing engine")
    parser.add_argument("--version", action=_Version)
    parser.add_argument("--config", help="configuration file (default: $ROUTER_CONFIG, else the embedded one)")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the router")
    serve.set_defaults(func=cmd_serve)

    rules = sub.add_parser("rules", help="check or dry-run rule files").add_subparsers(dest="rules_cmd", required=True)
    check = rules.add_parser("check", help="validate every rule file; file:line: message per problem")
    check.add_argument("dir", nargs="?", help="rules directory (default: rules_dir of the config)")
    check.set_defaults(func=cmd_rules_check)
    test = rules.add_parser("test", help="dry run: which rules match a file and what they would do")
    test.add_argument("file", help="a DICOM Part 10 file or an HL7 v2 message")
    test.add_argument("--calling-ae", default="", help="pretend the object came from this AE")
    test.add_argument("--called-ae", default="", help="pretend the object was sent to this AE")
    test.add_argument("--rules", help="rules directory (default: rules_dir of the config)")
    test.set_defaults(func=cmd_rules_test)

    plugins = sub.add_parser("plugins", help="the loaded plugins: origin, hooks, stages")
    plugins.set_defaults(func=cmd_plugins)

    ls, retry, purge = _add_queue_commands(sub)
    audit = sub.add_parser("audit", help="the audit trail").add_subparsers(dest="audit_cmd", required=True)
    audit_status = audit.add_parser("status", help="messages waiting in the spool, per audit record repository")
    audit_status.set_defaults(func=cmd_audit_status)
    user_commands = add_users_commands(sub)
    add_print_command(sub)
    add_db_commands(sub)
    media_commands = (add_import_command(sub), add_export_command(sub))

    echo = sub.add_parser("echo", help="C-ECHO a peer")
    echo.add_argument("peer", help="a peer name from the configuration (or its AE title)")
    echo.set_defaults(func=cmd_echo)
    find = sub.add_parser("find", help="C-FIND on a peer; a table, or DICOM JSON with --json")
    _add_qr_options(find, "STUDY")
    find.add_argument("--json", action="store_true", help="print the matches as a DICOM JSON array")
    find.add_argument("--no-defaults", action="store_true", help="only the -k keys, no default return keys")
    find.set_defaults(func=cmd_find)
    move = sub.add_parser("move", help="C-MOVE from a peer to an AE title")
    _add_qr_options(move, "STUDY")
    move.add_argument("--to", required=True, metavar="AE", help="move destination AE title (known to the peer)")
    move.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    move.set_defaults(func=cmd_move)
    get = sub.add_parser("get", help="C-GET from a peer into a folder")
    _add_qr_options(get, "STUDY")
    get.add_argument("--out", required=True, help="folder for the received files (<SOP Instance UID>.dcm)")
    get.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    get.set_defaults(func=cmd_get)
    send = sub.add_parser("send", help="C-STORE files (folders recursively) to a peer, as they are")
    send.add_argument("peer", help="a peer name from the configuration (or its AE title)")
    send.add_argument("files", nargs="+")
    send.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    send.set_defaults(func=cmd_send)

    # `router serve --config X` reads naturally too: accept --config after the sub-command
    for p in (
        serve,
        check,
        test,
        plugins,
        ls,
        retry,
        purge,
        audit_status,
        echo,
        find,
        move,
        get,
        send,
        *user_commands,
        *media_commands,
    ):
        p.add_argument("--config", dest="config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"router: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SchemaMismatch as exc:  # the database is not at this router's schema revision (router db upgrade)
        print(f"router: {exc}", file=sys.stderr)
        return EXIT_PROBLEMS


if __name__ == "__main__":
    sys.exit(main())
