"""Mint a bearer token for RELAY_AUTH=secret: the `token` command of `python -m relay`.

    RELAY_SECRET=... python -m relay token [--aud URL] [--limit N] [--days N]

Prints only the token on stdout (so that `$(python -m relay token)` works);
the secret itself is never printed.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime

import jwt

from relay.auth import ENTITIES_LIMIT_CLAIM, HMAC_ALGORITHM, normalised_url
from relay.config import ConfigError, Settings, http_url, positive_int

DEFAULT_DAYS = 365
MAX_DAYS = 3650
SECONDS_PER_DAY = 24 * 60 * 60


def mint_token(
    secret: str,
    *,
    audience: str | None = None,
    entities_limit: int | None = None,
    days: int = DEFAULT_DAYS,
    now: float | None = None,
) -> str:
    """An HS256 token valid for `days` days, optionally naming an audience and an entities limit."""
    issued_at = int(time.time() if now is None else now)
    claims: dict[str, object] = {"iat": issued_at, "exp": issued_at + days * SECONDS_PER_DAY}
    if audience:
        claims["aud"] = normalised_url(audience)
    if entities_limit is not None:
        claims[ENTITIES_LIMIT_CLAIM] = entities_limit
    return jwt.encode(claims, secret, algorithm=HMAC_ALGORITHM)


def run(args: argparse.Namespace) -> int:
    try:
        settings = Settings.from_env()
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    secret = settings.secret  # long enough: Settings refuses a short one
    if not secret:
        print("error: set RELAY_SECRET to the relay's secret", file=sys.stderr)
        return 2
    # The relay checks `aud` against RELAY_AUDIENCE, so by default name the first one.
    audience = args.aud or (settings.audience[0] if settings.audience else None)
    token = mint_token(secret, audience=audience, entities_limit=args.limit, days=args.days)
    print(token)
    expires = datetime.fromtimestamp(jwt.decode(token, options={"verify_signature": False})["exp"], UTC)
    print(
        f"audience: {audience or '(none)'}; expires {expires:%Y-%m-%d %H:%M} UTC",
        file=sys.stderr,
    )
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Print an HS256 bearer token for a relay running with RELAY_AUTH=secret. "
        "The secret is read from RELAY_SECRET."
    )
    parser.add_argument(
        "--aud",
        type=_argument(_audience_url),
        metavar="URL",
        help="the relay URL the token is for (default: the first RELAY_AUDIENCE, if set)",
    )
    parser.add_argument(
        "--limit",
        type=_argument(positive_int),
        metavar="N",
        help="entities limit per observable for calls with this token (CTR_ENTITIES_LIMIT claim)",
    )
    parser.add_argument(
        "--days",
        type=_argument(_days),
        default=DEFAULT_DAYS,
        metavar="N",
        help=f"days until the token expires, 1 to {MAX_DAYS} (default: {DEFAULT_DAYS})",
    )


def _argument(parse):
    """A setting's parser as an argparse type: one rule for the flag and the variable."""

    def parse_argument(raw: str):
        try:
            return parse(raw.strip())
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid value: {raw!r}") from None

    return parse_argument


def _days(raw: str) -> int:
    value = positive_int(raw)
    if value > MAX_DAYS:
        raise ConfigError(f"must be at most {MAX_DAYS}, got {raw!r}")
    return value


def _audience_url(raw: str) -> str:
    return normalised_url(http_url(raw))


if __name__ == "__main__":  # the command moved
    sys.exit("python -m relay.token is now: python -m relay token")
