"""The ``router`` command: serve, rules check|test, queue list|retry|purge."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from router.config import ConfigError, RouterConfig, load_config

if TYPE_CHECKING:
    from router.outbox import Outbox
    from router.stage import Stage

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2
JOB_STATES = ("pending", "inflight", "committing", "done", "dead")  # router.store.models.JobState.ALL


def _config(args: argparse.Namespace) -> RouterConfig:
    return load_config(args.config)


def cmd_serve(args: argparse.Namespace) -> int:
    from router.app import Router, StartupError

    cfg = _config(args)
    logging.basicConfig(level=cfg.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("pynetdicom", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        Router(cfg).serve_forever()
    except StartupError as exc:
        print(f"router: cannot start: {exc}", file=sys.stderr)
        return EXIT_PROBLEMS
    return EXIT_OK


def _stages(cfg: RouterConfig) -> dict[str, Stage]:
    from router.plugins import build_plugin_manager, collect_stages

    return collect_stages(build_plugin_manager(cfg.plugins))


def cmd_rules_check(args: argparse.Namespace) -> int:
    from router.rules.loader import load_rules

    cfg = _config(args)
    rules_dir = Path(args.dir).resolve() if args.dir else cfg.rules_dir
    result = load_rules(rules_dir, _stages(cfg), cfg)
    for problem in result.problems:
        print(problem)
    if result.problems:
        print(f"{len(result.problems)} problem(s) in {rules_dir}", file=sys.stderr)
        return EXIT_PROBLEMS
    print(f"ok: {len(result.ruleset.rules)} rule(s) in {len(result.ruleset.files)} file(s) in {rules_dir}")
    return EXIT_OK


def cmd_rules_test(args: argparse.Namespace) -> int:
    from router.envelope import Envelope, Source
    from router.pipeline import run_pipeline
    from router.rules.loader import load_rules
    from router.stage import StageError

    cfg = _config(args)
    stages = _stages(cfg)
    rules_dir = Path(args.rules).resolve() if args.rules else cfg.rules_dir
    loaded = load_rules(rules_dir, stages, cfg)
    for problem in loaded.problems:
        print(f"warning: {problem}", file=sys.stderr)
    try:
        raw = Path(args.file).read_bytes()
        env = Envelope.from_p10(raw, Source("file", calling_ae=args.calling_ae, called_ae=args.called_ae))
    except Exception as exc:
        print(f"{args.file}: not a readable DICOM file: {exc}", file=sys.stderr)
        return EXIT_PROBLEMS
    h = env.header
    print(
        f"object: SOP Instance {h.get('SOPInstanceUID', '?')} class {h.get('SOPClassUID', '?')} "
        f"({getattr(h.get('SOPClassUID'), 'name', '')}), calling AE {args.calling_ae or '-'}"
    )
    try:
        result = run_pipeline(env, loaded.ruleset, stages, cfg, dry_run=True)
    except StageError as exc:
        print(f"a stage would fail: {exc}")
        return EXIT_PROBLEMS
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


def _outbox(cfg: RouterConfig) -> Outbox:
    from router.outbox import Outbox
    from router.store.db import make_engine

    return Outbox(make_engine(cfg.effective_database_url), cfg.forward, cfg.data_dir)


def cmd_queue_list(args: argparse.Namespace) -> int:
    outbox = _outbox(_config(args))
    counts = outbox.counts()
    if not counts:
        print("the queue is empty")
        return EXIT_OK
    print("peer                 pending  inflight  committing      done      dead")
    for peer in sorted({p for p, _ in counts}):
        row = [counts.get((peer, s), 0) for s in JOB_STATES]
        print(f"{peer:<20} {row[0]:>8} {row[1]:>9} {row[2]:>11} {row[3]:>9} {row[4]:>9}")
    jobs = outbox.list(state=args.state, peer=args.peer, limit=args.limit)
    if args.state or args.peer:
        print()
        print(f"{'id':>8}  {'state':<10} {'peer':<12} {'tries':>5}  {'next attempt':<19}  sop instance / last error")
        for j in jobs:
            print(
                f"{j.id:>8}  {j.state:<10} {j.peer:<12} {j.attempts:>5}  "
                f"{j.next_attempt_at:%Y-%m-%d %H:%M:%S}  {j.sop_uid}  {j.last_error}"
            )
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="router", description="HL7 + DICOM routing engine")
    parser.add_argument("--config", help="configuration file (default: $ROUTER_CONFIG, else the embedded one)")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the router")
    serve.set_defaults(func=cmd_serve)

    rules = sub.add_parser("rules", help="check or dry-run rule files").add_subparsers(dest="rules_cmd", required=True)
    check = rules.add_parser("check", help="validate every rule file; file:line: message per problem")
    check.add_argument("dir", nargs="?", help="rules directory (default: rules_dir of the config)")
    check.set_defaults(func=cmd_rules_check)
    test = rules.add_parser("test", help="dry run: which rules match a file and what they would do")
    test.add_argument("file", help="a DICOM Part 10 file")
    test.add_argument("--calling-ae", default="", help="pretend the object came from this AE")
    test.add_argument("--called-ae", default="", help="pretend the object was sent to this AE")
    test.add_argument("--rules", help="rules directory (default: rules_dir of the config)")
    test.set_defaults(func=cmd_rules_test)

    queue = sub.add_parser("queue", help="the forward queue").add_subparsers(dest="queue_cmd", required=True)
    ls = queue.add_parser("list", help="counts per peer and state; jobs with --state/--peer")
    ls.add_argument("--state", choices=list(JOB_STATES))
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

    # `router serve --config X` reads naturally too: accept --config after the sub-command
    for p in (serve, check, test, ls, retry, purge):
        p.add_argument("--config", dest="config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"router: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
