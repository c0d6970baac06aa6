"""``router import PATH...``: DICOM media (a CD's folder, a DICOMDIR, a folder of files, a .zip) into the router,
or with ``--to`` straight to a peer (``router.media``, docs/media.md).

Exit status: 0 when nothing was refused or damaged, 1 otherwise (the summary and ``--report`` say which), 2 for a
usage or configuration problem (no such path, invalid rules, an unknown peer).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from router.config import load_config

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2


def cmd_import(args: argparse.Namespace) -> int:
    from router.media.importer import Importer, ImportOptions
    from router.media.selection import Selection
    from router.media.source import MediaError, MediaSource, open_source
    from router.media.worklists import WorklistUnavailable
    from router.media.workspace import Workspace, WorkspaceError
    from router.scu.association import AssociationFailed

    cfg = load_config(args.config)
    if args.to and args.to not in cfg.peers:
        print(f"router: unknown peer {args.to!r} (peers: {', '.join(sorted(cfg.peers)) or 'none'})", file=sys.stderr)
        return EXIT_USAGE
    if (args.worklist or args.new_uids or args.matched_only) and not args.reconcile:
        print("router: --worklist, --new-uids and --matched-only go with --reconcile", file=sys.stderr)
        return EXIT_USAGE
    selection = Selection(tuple(args.patient_id), tuple(args.study), tuple(args.series), tuple(args.modality))
    options = ImportOptions(selection, args.dry_run, args.assume_charset or "", args.to or "",
                            progress=not args.quiet, reconcile=_reconcile_options(args),
                            worklist=args.worklist or "")  # fmt: skip
    sources: list[MediaSource] = []
    try:
        sources = [open_source(Path(p)) for p in args.paths]
        with Workspace(cfg, "import") as work:
            importer = Importer(cfg, options, work)
            if args.list:
                tree, report = importer.tree(sources)
                print("\n".join(tree.lines()) or "no DICOM objects found")
            else:
                report = importer.run(sources)
    except (MediaError, WorkspaceError, WorklistUnavailable, AssociationFailed) as exc:
        print(f"router: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        for source in sources:
            source.close()
    for problem in report.problems:
        print(f"damaged: {problem}", file=sys.stderr)
    for item in report.files:
        if item.outcome in ("refused", "damaged"):
            print(f"{item.outcome}: {item.file}: {item.reason}", file=sys.stderr)
    if args.report:
        report.write(Path(args.report))
    if not args.list:
        print(report.summary())
    if report.studies:
        print(_reconciled(report.studies))
    return EXIT_PROBLEMS if report.failed else EXIT_OK


def _reconcile_options(args: argparse.Namespace) -> Any:
    from router.media.reconcile import ReconcileOptions

    return ReconcileOptions(args.matched_only, args.new_uids) if args.reconcile else None


def _reconciled(studies: list[dict[str, Any]]) -> str:
    """``reconciled 3 studies: 1 by accession, 1 by demographics, 1 unmatched (held back)``."""
    counts = Counter(s["matched"] for s in studies)
    parts = [
        f"{counts[k]} {label}"
        for k, label in (("accession", "by accession"), ("demographics", "by demographics"), ("none", "unmatched"))
        if counts[k]
    ]
    held = sum(1 for s in studies if s["held_back"])
    noun = "study" if len(studies) == 1 else "studies"
    return f"reconciled {len(studies)} {noun}: {', '.join(parts)}" + (f" ({held} held back)" if held else "")


def add_import_command(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("import", help="import DICOM media (DICOMDIR, folder, .zip) through the rules, or --to a peer")
    p.add_argument("paths", nargs="+", metavar="PATH", help="a DICOMDIR, a folder (with or without one), a .zip")
    p.add_argument("--patient-id", action="append", default=[], help="only this patient (repeatable)")
    p.add_argument("--study", action="append", default=[], metavar="UID|ACCESSION", help="only this study")
    p.add_argument("--series", action="append", default=[], metavar="UID", help="only this series")
    p.add_argument("--modality", action="append", default=[], help="only series of this modality, e.g. MR")
    p.add_argument("--list", action="store_true", help="print the patient/study/series tree with counts and exit")
    p.add_argument("--to", metavar="PEER", help="C-STORE to this peer instead of the router's intake")
    p.add_argument("--dry-run", action="store_true", help="read, check and route; store and send nothing")
    p.add_argument("--report", metavar="FILE.json", help="each file's outcome as JSON")
    p.add_argument("--assume-charset", metavar="SET",
                   help="read text under SET when the declared set is invalid or wrong, e.g. 'ISO_IR 100'")  # fmt: skip
    p.add_argument(
        "--reconcile",
        action="store_true",
        help="match each study against the worklist (accession number, then patient) and write the "
        "local patient and order values, the old ones in Original Attributes Sequence",
    )
    p.add_argument(
        "--worklist", metavar="PEER", help="with --reconcile: ask this MWL SCP, not the router's own worklist"
    )
    p.add_argument("--matched-only", action="store_true", help="with --reconcile: hold back studies without a match")
    p.add_argument(
        "--new-uids",
        action="store_true",
        help="with --reconcile: new Study/Series/SOP Instance UIDs (the old ones in Original Attributes Sequence)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=cmd_import)
    return p
