"""Mint a bearer token for RELAY_AUTH=secret.

    RELAY_SECRET=... python -m relay.token [--aud URL] [--limit N] [--days N]

Prints only the token on stdout (so that `$(python -m relay.token)` works);
the secret itself is never printed.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from urllib.parse import urlsplit

import jwt

from relay.auth import ENTITIES_LIMIT_CLAIM, HMAC_ALGORITHM, normalised_url
from relay.config import MIN_SECRET_LENGTH, ConfigError, Settings

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


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    secret = settings.secret
    if not secret:
        print("error: set RELAY_SECRET to the relay's secret", file=sys.stderr)
        return 2
    if len(secret) < MIN_SECRET_LENGTH:
        print(f"error: RELAY_SECRET must be at least {MIN_SECRET_LENGTH} characters long", file=sys.stderr)
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m relay.token",
        description="Print an HS256 bearer token for a relay running with RELAY_AUTH=secret. "
        "The secret is read from RELAY_SECRET.",
    )
    parser.add_argument(
        "--aud",
        type=_http_url,
        metavar="URL",
        help="the relay URL the token is for (default: the first RELAY_AUDIENCE, if set)",
    )
    parser.add_argument(
        "--limit",
        type=_positive_int,
        metavar="N",
        help="entities limit per observable for calls with this token (CTR_ENTITIES_LIMIT claim)",
    )
    parser.add_argument(
        "--days",
        type=_days,
        default=DEFAULT_DAYS,
        metavar="N",
        help=f"days until the token expires, 1 to {MAX_DAYS} (default: {DEFAULT_DAYS})",
    )
    return parser


def _positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {raw!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {raw!r}")
    return value


def _days(raw: str) -> int:
    value = _positive_int(raw)
    if value > MAX_DAYS:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_DAYS}, got {raw!r}")
    return value


def _http_url(raw: str) -> str:
    parts = urlsplit(raw.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(f"must be an http(s) URL, got {raw!r}")
    return normalised_url(raw)


if __name__ == "__main__":
    sys.exit(main())
