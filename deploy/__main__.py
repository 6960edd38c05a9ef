"""`python -m deploy deploy` and `python -m deploy register` (what `make deploy` / `make register` run)."""

from __future__ import annotations

import sys

from deploy.settings import DeployError


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args not in (["deploy"], ["register"]):
        print("usage: python -m deploy deploy|register", file=sys.stderr)
        return 2
    try:
        if args == ["deploy"]:
            from deploy.cloud import deploy

            deploy()
        else:
            from deploy.register import register

            register()
    except DeployError as exc:
        print(f"{args[0]}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
