"""Command-line verbs of the pool server: ``adapterpool serve`` and ``adapterpool token create``."""

from __future__ import annotations

import argparse

SERVER_COMMANDS = {"serve", "token"}


def add_server_parsers(sub: argparse._SubParsersAction) -> None:
    serve = sub.add_parser("serve", help="serve a pool over HTTP")
    serve.add_argument("path")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8750)
    serve.add_argument("--max-upload-mb", type=int, default=256,
                       help="largest upload accepted, counted as it streams (default: 256)")
    serve.add_argument("--max-temp-mb", type=int, default=None,
                       help="temp disk all uploads in flight may hold together; an upload that "
                            "does not fit is refused with 503 and Retry-After (default: 4 x "
                            "--max-upload-mb)")
    token = sub.add_parser("token", help="write tokens of a served pool")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    create = token_sub.add_parser("create", help="create a write token (shown once)")
    create.add_argument("path")
    create.add_argument("--name", required=True, help="who the token is for")


def run_server_command(args: argparse.Namespace) -> None:
    if args.command == "serve":
        from .app import serve

        serve(args.path, host=args.host, port=args.port,
              max_upload_bytes=args.max_upload_mb * 1024 * 1024,
              max_temp_bytes=None if args.max_temp_mb is None else args.max_temp_mb * 1024 * 1024)
    elif args.command == "token":
        from ..pool import AdapterPool
        from ..pool.tokens import create_token

        print(create_token(AdapterPool(args.path), args.name))
