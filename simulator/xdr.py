"""XDR's side of `RELAY_AUTH=jwks`, on one machine: a signing key, its key set, its tokens.

The simulator serves the public half at `/.well-known/jwks`;
`python -m simulator xdr-token` signs tokens with the private half, as XDR
signs a module's configuration token (RS256, `kid` in the header, `jwks_host`
and `aud` in the claims, the module's settings such as `CTR_ENTITIES_LIMIT` and
`ACCESS_KEY`).
Both read one key file, made on first use (default `.simulator/xdr-key.pem`
in the project, git-ignored).
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

DEFAULT_KEY_FILE = Path(__file__).resolve().parent.parent / ".simulator" / "xdr-key.pem"
TOKEN_MINUTES = 60


@dataclass(frozen=True)
class XdrKeys:
    private_key: rsa.RSAPrivateKey

    @classmethod
    def load_or_create(cls, key_file: Path = DEFAULT_KEY_FILE) -> XdrKeys:
        """The key in `key_file`; a new one, saved there (owner-only), when the file does not exist."""
        if key_file.exists():
            key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
            if not isinstance(key, rsa.RSAPrivateKey):
                raise ValueError(f"{key_file}: not an RSA private key")
            return cls(key)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        key_file.parent.mkdir(parents=True, exist_ok=True)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        # Written under a temporary name, then renamed: a server and a token command started
        # together never read half a key, and the first one to finish wins.
        partial = key_file.with_name(f"{key_file.name}.{os.getpid()}.partial")
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(pem)
        try:
            os.link(partial, key_file)  # fails if another process made it first
        except FileExistsError:
            partial.unlink()
            return cls.load_or_create(key_file)
        partial.unlink()
        return cls(key)

    @property
    def kid(self) -> str:
        public = self.private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return f"simulator-{hashlib.sha256(public).hexdigest()[:16]}"

    def jwks(self) -> dict[str, Any]:
        public = jwt.algorithms.RSAAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        return {"keys": [{**public, "kid": self.kid, "use": "sig", "alg": "RS256"}]}

    def token(
        self,
        *,
        jwks_host: str,
        audience: str,
        entities_limit: int | None = None,
        access_key: str | None = None,
        minutes: int = TOKEN_MINUTES,
        now: float | None = None,
    ) -> str:
        issued_at = int(time.time() if now is None else now)
        claims: dict[str, Any] = {
            "jwks_host": jwks_host,
            "aud": audience,
            "iat": issued_at,
            "exp": issued_at + minutes * 60,
        }
        if entities_limit is not None:
            claims["CTR_ENTITIES_LIMIT"] = entities_limit
        if access_key is not None:
            claims["ACCESS_KEY"] = access_key  # the module's custom_ACCESS_KEY, as XDR sends it
        return jwt.encode(claims, self.private_key, algorithm="RS256", headers={"kid": self.kid})


class ModuleTypeApi:
    """XDR's module-type API (IROH-INT) for one organisation, in memory: what `make register`
    talks to. `handle` answers a werkzeug request: the client-credentials token endpoint
    (`POST /iroh/oauth2/token`, HTTP Basic), `GET /iroh/iroh-int/module-type/` (the list),
    `POST /iroh/iroh-int/module-type` (create, a new id) and `PATCH /iroh/iroh-int/module-type/ID`
    (update). Anything else, or a wrong token, is refused as XDR refuses it."""

    TOKEN_PATH = "/iroh/oauth2/token"  # noqa: S105 - a path
    PATH = "/iroh/iroh-int/module-type"

    def __init__(self, client_id: str, client_secret: str, access_token: str):
        self.client_id, self.client_secret, self.access_token = client_id, client_secret, access_token
        self.module_types: dict[str, dict[str, Any]] = {}
        self.changes: list[tuple[str, str]] = []  # (method, id) of each create or update

    def handle(self, request: Any) -> Any:
        import base64
        import json
        import uuid

        from werkzeug import Response

        def answer(body: Any, status: int = 200) -> Response:
            return Response(json.dumps(body), status, content_type="application/json")

        if request.path == self.TOKEN_PATH and request.method == "POST":
            credentials = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
            if request.headers.get("Authorization") != f"Basic {credentials}" or (
                request.form.get("grant_type") != "client_credentials"
            ):
                return answer({"error": "invalid_client", "error_description": "Bad credentials"}, 401)
            return answer({"access_token": self.access_token, "token_type": "bearer", "expires_in": 600})
        if request.headers.get("Authorization") != f"Bearer {self.access_token}":
            return answer({"error": "unauthorized", "message": "invalid token"}, 401)
        path = request.path.rstrip("/")
        if path == self.PATH and request.method == "GET":
            return answer(list(self.module_types.values()))
        if path == self.PATH and request.method == "POST":
            identifier = f"module-type-{uuid.uuid4().hex[:12]}"
            self.module_types[identifier] = {**request.get_json(), "id": identifier}
            self.changes.append(("POST", identifier))
            return answer(self.module_types[identifier], 201)
        if path.startswith(self.PATH + "/") and request.method == "PATCH":
            identifier = path.rsplit("/", 1)[-1]
            if identifier not in self.module_types:
                return answer({"error": "not_found", "message": f"no module type {identifier}"}, 404)
            self.module_types[identifier].update(request.get_json())
            self.changes.append(("PATCH", identifier))
            return answer(self.module_types[identifier])
        return answer({"error": "not_found", "message": f"{request.method} {request.path}"}, 404)
