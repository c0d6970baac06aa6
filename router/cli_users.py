"""``router users add|list|remove|passwd|token``: who may use the admin API and the console (``router.store.users``).

A password is read from standard input when it is not a terminal (one line: ``printf '%s\\n' "$PW" | router users
add ann --role operator``), else asked twice without echo. Each change is announced with ``router_admin_changed``,
as the admin API's are, by ``cli:`` and the login name of whoever ran it.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from router.config import RouterConfig, load_config
from router.store.ops_models import ROLES

EXIT_OK, EXIT_PROBLEMS = 0, 1


def _config(args: argparse.Namespace) -> RouterConfig:
    return load_config(args.config)


def _users_engine(cfg: RouterConfig) -> Any:
    from router.store.db import make_engine

    return make_engine(cfg.effective_database_url)


def _read_password(prompt_twice: bool = True) -> str:
    """The password: from standard input when it is not a terminal (one line), else asked twice without echo."""
    import getpass

    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("password: ")
    if prompt_twice and getpass.getpass("again: ") != first:
        raise ValueError("the two passwords differ")
    return first


def _announce(cfg: RouterConfig, action: str, target: str, **detail: Any) -> None:
    """``router_admin_changed`` for a change made on the command line (the audit trail records it)."""
    import getpass

    from router.hooks.manager import build_plugin_manager, notify

    pm = build_plugin_manager(cfg)
    notify(pm, "router_startup", config=cfg, process="users", plugin_settings=pm.settings)  # opens the audit trail
    try:
        notify(pm, "router_admin_changed", user=f"cli:{getpass.getuser()}", role="", action=action, target=target,
               address="", detail=detail)  # fmt: skip
    finally:
        notify(pm, "router_shutdown", process="users")


def cmd_users_add(args: argparse.Namespace) -> int:
    from router.store.users import UserError, add_user

    cfg = _config(args)
    try:
        add_user(_users_engine(cfg), args.name, args.role, _read_password())
    except (UserError, ValueError) as exc:
        print(f"router: {exc}", file=sys.stderr)
        return EXIT_PROBLEMS
    _announce(cfg, "user.added", args.name, new_role=args.role)
    print(f"user {args.name} added ({args.role})")
    return EXIT_OK


def cmd_users_list(args: argparse.Namespace) -> int:
    from router.store.users import list_users

    found = list_users(_users_engine(_config(args)))
    if not found:
        print("no users (router users add NAME --role admin)")
    for user in found:
        print(f"{user['name']:<24} {user['role']:<9} {user['tokens']} token(s)  since {user['created_at']:%Y-%m-%d}")
    return EXIT_OK


def cmd_users_remove(args: argparse.Namespace) -> int:
    from router.store.users import remove_user

    cfg = _config(args)
    if not remove_user(_users_engine(cfg), args.name):
        print(f"router: no user {args.name!r}", file=sys.stderr)
        return EXIT_PROBLEMS
    _announce(cfg, "user.removed", args.name)
    print(f"user {args.name} removed")
    return EXIT_OK


def cmd_users_passwd(args: argparse.Namespace) -> int:
    from router.store.users import UserError, change_user

    cfg = _config(args)
    try:
        found = change_user(_users_engine(cfg), args.name, role=args.role, password=_read_password())
    except (UserError, ValueError) as exc:
        print(f"router: {exc}", file=sys.stderr)
        return EXIT_PROBLEMS
    if not found:
        print(f"router: no user {args.name!r}", file=sys.stderr)
        return EXIT_PROBLEMS
    _announce(cfg, "user.changed", args.name, new_role=args.role, password_changed=True)
    print(f"password of {args.name} changed; its console sessions ended")
    return EXIT_OK


def cmd_users_token(args: argparse.Namespace) -> int:
    from router.store.users import UserError, create_token

    cfg = _config(args)
    try:
        token_id, token = create_token(_users_engine(cfg), args.name, args.label)
    except UserError as exc:
        print(f"router: {exc}", file=sys.stderr)
        return EXIT_PROBLEMS
    _announce(cfg, "token.created", args.name, token_id=token_id, label=args.label)
    print(token)
    print(f"token {token_id} of {args.name}: shown only now (send it as Authorization: Bearer TOKEN)", file=sys.stderr)
    return EXIT_OK


def add_users_commands(sub: Any) -> tuple[argparse.ArgumentParser, ...]:
    """The ``router users`` sub-commands (``sub``: the ``router`` command's sub-parsers)."""
    users = sub.add_parser("users", help="who may use the admin API and the console").add_subparsers(
        dest="users_cmd", required=True
    )
    add = users.add_parser("add", help="add a user (password from standard input when it is not a terminal)")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=ROLES)
    add.set_defaults(func=cmd_users_add)
    ls = users.add_parser("list", help="the users, their roles and tokens")
    ls.set_defaults(func=cmd_users_list)
    remove = users.add_parser("remove", help="remove a user, its tokens and sessions")
    remove.add_argument("name")
    remove.set_defaults(func=cmd_users_remove)
    passwd = users.add_parser("passwd", help="a new password (and --role) for a user; ends its console sessions")
    passwd.add_argument("name")
    passwd.add_argument("--role", choices=ROLES, help="a new role too")
    passwd.set_defaults(func=cmd_users_passwd)
    token = users.add_parser("token", help="a new API token for a user, printed once")
    token.add_argument("name")
    token.add_argument("--label", default="", help="what the token is for")
    token.set_defaults(func=cmd_users_token)
    return add, ls, remove, passwd, token
