"""A folder of answers to serve instead of the simulator's own catalogue (`--answers DIR`).

Each `*.json` file holds one answer, or a list of them, in the form of a
recorded answer:

    {"observable": "198.51.100.7", "status": 200, "content_type": "application/json",
     "body": {...}, "api": "v3"}

`status` (default 200), `content_type` (default application/json) and
`headers` are optional. `api` (`score` or `v3`) says which API the answer is
for; without it, a `request.path` under `/api/v3/` means v3 and one under
`/api/score/` means score; with neither, the answer serves both APIs. A body
that is a string is served as it is (an HTML error page, say).
"""

from __future__ import annotations

import json
from pathlib import Path

from simulator.server import SCORE_API, V3_API, Catalogue, Scripted


class AnswersError(ValueError):
    """A file of the answers folder cannot be served."""


def load_answers(folder: Path) -> Catalogue:
    if not folder.is_dir():
        raise AnswersError(f"{folder}: not a folder")
    replies: dict[tuple[str, str], Scripted] = {}
    files = sorted(folder.glob("*.json"))
    if not files:
        raise AnswersError(f"{folder}: no *.json file in it")
    for path in files:
        try:
            content = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise AnswersError(f"{path}: not readable JSON ({error})") from None
        for index, item in enumerate(content if isinstance(content, list) else [content]):
            where = f"{path}" if not isinstance(content, list) else f"{path}, item {index}"
            value, apis, scripted = _answer(item, where)
            for api in apis:
                replies[(value, api)] = scripted

    def answer(value: str, api: str) -> Scripted | None:
        return replies.get((value, api))

    return answer


def _answer(item: object, where: str) -> tuple[str, tuple[str, ...], Scripted]:
    if not isinstance(item, dict) or not isinstance(item.get("observable"), str) or "body" not in item:
        raise AnswersError(f'{where}: needs at least "observable" (a string) and "body"')
    status = item.get("status", 200)
    if not isinstance(status, int) or not 100 <= status <= 599:
        raise AnswersError(f"{where}: status must be an HTTP status, got {status!r}")
    api = item.get("api")
    if api is None:
        request_path = (
            (item.get("request") or {}).get("path", "") if isinstance(item.get("request"), dict) else ""
        )
        if request_path.startswith("/api/v3/"):
            api = V3_API
        elif request_path.startswith("/api/score/"):
            api = SCORE_API
    if api not in (None, SCORE_API, V3_API):
        raise AnswersError(f'{where}: api must be "score" or "v3", got {api!r}')
    scripted = Scripted(
        status=status,
        body=item["body"],
        headers=item.get("headers"),
        content_type=item.get("content_type", "application/json"),
    )
    return item["observable"], (api,) if api else (SCORE_API, V3_API), scripted
