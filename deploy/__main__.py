"""`python -m deploy deploy|register|destroy` (what `make deploy`, `make register`, `make destroy` run)."""

from __future__ import annotations

import sys

from deploy.settings import DeployError


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args not in (["deploy"], ["register"], ["destroy"]):
        print("usage: python -m deploy deploy|register|destroy", file=sys.stderr)
        return 2
    try:
        if args == ["deploy"]:
            from deploy.cloud import deploy

            deploy()
        elif args == ["destroy"]:
            from deploy.destroy import destroy

            destroy()
        else:
            from deploy.register import register

            register()
    except DeployError as exc:
        print(f"{args[0]}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
