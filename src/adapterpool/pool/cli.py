"""Command-line verbs of the pool: ``adapterpool pool init|list|show|remove``."""

from __future__ import annotations

import argparse
import json

POOL_COMMANDS = {"pool"}


def add_pool_parsers(sub: argparse._SubParsersAction) -> None:
    pool = sub.add_parser("pool", help="create and inspect adapter pools")
    pool_sub = pool.add_subparsers(dest="pool_command", required=True)
    init = pool_sub.add_parser("init", help="create an empty pool")
    init.add_argument("path")
    init.add_argument("--base-model", help="Hub id or local folder (default: all-MiniLM-L6-v2)")
    init.add_argument("--catalog", help="SQLAlchemy URL of the catalog (default: SQLite in the pool)")
    listing = pool_sub.add_parser("list", help="list adapters")
    listing.add_argument("path")
    listing.add_argument("--json", action="store_true")
    show = pool_sub.add_parser("show", help="one adapter's record")
    show.add_argument("path")
    show.add_argument("id")
    remove = pool_sub.add_parser("remove", help="remove an adapter")
    remove.add_argument("path")
    remove.add_argument("id")


def run_pool_command(args: argparse.Namespace) -> None:
    from ..summary import console, pool_table
    from . import AdapterPool, open_pool

    if args.pool_command == "init":
        pool = AdapterPool.init(args.path, base_model=args.base_model, catalog_url=args.catalog)
        console.print(f"created pool {pool.path} for base model {pool.base_model}")
        return
    pool = open_pool(args.path)
    if args.pool_command == "list":
        records = pool.list()
        if args.json:
            print(json.dumps([r.as_json() for r in records], indent=2))
        else:
            console.print(pool_table(records, f"{args.path} ({len(records)} adapters, {pool.base_model})"))
    elif args.pool_command == "show":
        print(json.dumps(pool.get(args.id).as_json(), indent=2))
    elif args.pool_command == "remove":
        record = pool.remove(args.id)
        console.print(f"removed {record.id}")
