"""Command-line verbs of the pool: ``adapterpool pool init|list|show|remove``."""

from __future__ import annotations

import argparse
import json

from ..task_kinds import KIND_NAMES

POOL_COMMANDS = {"pool"}


def add_pool_parsers(sub: argparse._SubParsersAction) -> None:
    from .maintenance import DEFAULT_GRACE_SECONDS

    pool = sub.add_parser("pool", help="create and inspect adapter pools")
    pool_sub = pool.add_subparsers(dest="pool_command", required=True)
    init = pool_sub.add_parser("init", help="create an empty pool")
    init.add_argument("path")
    init.add_argument("--base-model", help="Hub id or local folder (default: all-MiniLM-L6-v2)")
    init.add_argument("--catalog",
                      help="SQLAlchemy URL of the catalog (default: SQLite in the pool)")
    init.add_argument("--storage", help="fsspec URL for adapter files, e.g. s3://bucket/pool "
                                        "(default: the pool folder)")
    listing = pool_sub.add_parser("list", help="list adapters")
    listing.add_argument("path")
    listing.add_argument("--json", action="store_true")
    show = pool_sub.add_parser("show", help="one adapter's record")
    show.add_argument("path")
    show.add_argument("id")
    remove = pool_sub.add_parser("remove", help="remove an adapter")
    remove.add_argument("path")
    remove.add_argument("id")
    verify = pool_sub.add_parser("verify", help="recompute hashes, find orphans and leftovers")
    verify.add_argument("path")
    verify.add_argument("--repair", action="store_true",
                        help="delete orphans and leftovers (never a catalogued adapter's files); "
                             "safe while others add: orphans are decided under the catalog's lock")
    verify.add_argument("--grace", type=float, default=DEFAULT_GRACE_SECONDS, metavar="SECONDS",
                        help="leave staging folders and orphans younger than this alone: an import "
                             "in progress stages its files before it takes the catalog lock "
                             "(default: %(default)s)")
    verify.add_argument("--json", action="store_true")
    reindex = pool_sub.add_parser(
        "reindex", help="compute the missing task summaries (for prefiltering large pools)",
        description="Adapters contributed before task summaries existed, or imported without "
                    "one, get a probe summary: the packaged probe texts embedded by the base "
                    "model, weighted by how far the adapter moves each (their training texts are "
                    "not known). Adapters that have a summary are left as they are.")
    reindex.add_argument("path")
    reindex.add_argument("--json", action="store_true")
    export = pool_sub.add_parser("export", help="a PEFT folder with a model card")
    export.add_argument("path")
    export.add_argument("id")
    export.add_argument("out")
    imp = pool_sub.add_parser("import", help="add a PEFT folder or hf://user/repo")
    imp.add_argument("path")
    imp.add_argument("source")
    imp.add_argument("--task-name")
    imp.add_argument("--kind", choices=list(KIND_NAMES))
    imp.add_argument("--labels", help="comma-separated label names, in head order")
    imp.add_argument("--parent")
    for sub_parser in (listing, show, remove, imp):
        sub_parser.add_argument("--token", help="write token of a pool server")


def run_pool_command(args: argparse.Namespace) -> None:
    from ..cli.display import console, pool_table
    from . import AdapterPool, PoolError, open_pool

    served = args.path.startswith(("http://", "https://"))
    if args.pool_command == "init":
        if served:
            raise PoolError(f"pool init creates a pool folder; {args.path} is a pool server (run "
                            "`adapterpool pool init` and `adapterpool serve` on the server)")
        pool = AdapterPool.init(args.path, base_model=args.base_model, catalog_url=args.catalog,
                                storage_url=args.storage)
        console.print(f"created pool {pool.path} for base model {pool.base_model}")
        return
    pool = open_pool(args.path, token=getattr(args, "token", None))
    if args.pool_command == "list":
        records = pool.list()
        if args.json:
            print(json.dumps([r.as_json() for r in records], indent=2))
        else:
            console.print(
                pool_table(records, f"{args.path} ({len(records)} adapters, {pool.base_model})")
            )
    elif args.pool_command == "show":
        print(json.dumps(pool.get(args.id).as_json(), indent=2))
    elif args.pool_command == "remove":
        record = pool.remove(args.id)
        console.print(f"removed {record.id}")
    elif args.pool_command == "verify":
        from .maintenance import verify

        if not isinstance(pool, AdapterPool):
            if args.repair:
                raise PoolError(f"verify --repair deletes orphans and leftovers on the server's "
                                f"disk: run it there, on the pool folder {args.path} serves")
            report = pool.verify()  # every served file against the catalog's sha256
            if args.json:
                print(json.dumps(report, indent=2))
            else:
                console.print(
                    f"{report['verified']}/{report['adapters']} adapters served by {args.path} "
                    f"verified; corrupt: {report['corrupt'] or 'none'}; missing files: "
                    f"{report['missing_files'] or 'none'}; task summaries: "
                    f"{report['task_summaries']} verified, corrupt: "
                    f"{report['task_summaries_corrupt'] or 'none'} (orphans and leftovers are "
                    "on the server's disk: `pool verify` there finds them)")
            if not report["consistent"]:
                raise PoolError("the server serves adapters whose files (or task summaries) are "
                                "missing or altered; run `adapterpool pool verify` on its folder")
            return
        report = verify(pool, repair=args.repair, grace_seconds=args.grace)
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            console.print(
                f"{report['verified']}/{report['adapters']} adapters verified; corrupt: "
                f"{report['corrupt'] or 'none'}; "
                f"missing files: {report['missing_files'] or 'none'}; "
                f"orphans: {report['orphans'] or 'none'}; "
                f"leftovers: {report['leftovers'] or 'none'}; "
                f"task summaries: {report['task_summaries']} verified, corrupt: "
                f"{report['task_summaries_corrupt'] or 'none'}, unrecorded: "
                f"{report['task_summaries_unrecorded'] or 'none'}, dangling: "
                f"{report['task_summaries_dangling'] or 'none'}"
                + (" (orphans, leftovers and broken summaries removed)" if args.repair else "")
                + (f"; left alone, younger than {args.grace:g} s: {report['recent']}"
                   if report["recent"] else "")
            )
        if not report["consistent"]:
            raise PoolError("the pool has catalogued adapters whose files (or task summaries) are "
                            "missing or altered")
    elif args.pool_command == "reindex":
        from ..ranking.reindex import reindex

        if not isinstance(pool, AdapterPool):
            raise PoolError(f"reindex attaches task summaries to the pool's files: run it on the "
                            f"server, on the pool folder {args.path} serves")
        result = reindex(pool, show_progress=not args.json)
        if args.json:
            print(json.dumps(result.as_json(), indent=2))
        else:
            console.print(
                f"{len(result.computed)} task summaries computed, {result.already} adapters had "
                f"one, {len(result.failed)} failed ({result.seconds:.1f}s)")
            for adapter_id, why in result.failed.items():
                console.print(f"[yellow]warning:[/yellow] {adapter_id}: {why}", highlight=False)
        if result.failed:
            raise PoolError(f"{len(result.failed)} adapters got no task summary (see above)")
    elif args.pool_command == "export":
        from .maintenance import export

        console.print(f"exported {args.id} to {export(pool, args.id, args.out)}")
    elif args.pool_command == "import":
        from .maintenance import import_adapter

        labels = [x.strip() for x in args.labels.split(",")] if args.labels else None
        record = import_adapter(pool, args.source, task_name=args.task_name, kind=args.kind,
                                label_names=labels, parent_id=args.parent)
        console.print(f"imported as {record.id}")
