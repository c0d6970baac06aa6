"""``router export --study UID... --out DIR|FILE.zip``: stored studies as a DICOM file-set with a DICOMDIR
(``router.media.export``, docs/media.md); announced with ``router_instances_exported`` (service ``media``)."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Any

from router.config import load_config

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2


def cmd_export(args: argparse.Namespace) -> int:
    from router.hooks.manager import notify
    from router.media.export import ExportError, stored_instances, write_file_set
    from router.media.workspace import Workspace

    cfg = load_config(args.config)
    out = Path(args.out).resolve()
    with Workspace(cfg, "export") as work:
        with work.engine.connect() as conn:
            stored = stored_instances(conn, cfg.data_dir, args.study, args.patient_id or "")
        try:
            result = write_file_set(stored, out, readme=not args.no_readme)
        except (ExportError, OSError) as exc:
            print(f"router: {exc}", file=sys.stderr)
            return EXIT_PROBLEMS
        notify(work.pm, "router_instances_exported", service="media", calling_ae="", user=_user(), address="",
               destination=str(out), instances=result.instances, failed=0, status=0)  # fmt: skip
    invented = f"; {result.invented} directory record value(s) invented" if result.invented else ""
    print(f"exported {len(result.instances)} object(s) of {result.studies} study(ies), {result.size / 1e6:.1f} MB, "
          f"to {out}{invented}")  # fmt: skip
    return EXIT_OK


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""


def add_export_command(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("export", help="write stored studies as a DICOM file-set with a DICOMDIR (folder or .zip)")
    p.add_argument("--study", nargs="+", action="extend", required=True, metavar="UID", help="Study Instance UIDs")
    p.add_argument("--patient-id", help="only the studies' objects of this patient")
    p.add_argument("--out", required=True, metavar="DIR|FILE.zip", help="an empty or new folder, or a new .zip")
    p.add_argument("--no-readme", action="store_true", help="no README.TXT beside the DICOMDIR")
    p.set_defaults(func=cmd_export)
    return p
