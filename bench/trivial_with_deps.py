"""The bench's cold-start yardstick: a trivial function that imports what the relay needs at run time.

Redis is left out on purpose: the relay imports it only when REDIS_URL is set,
and the benchmark runs the relay without it.

`functions-framework --target=trivial --source=bench/trivial_with_deps.py`
"""

import cachetools  # noqa: F401
import functions_framework
import idna  # noqa: F401
import jwt  # noqa: F401 - with PyJWT[crypto], this imports cryptography too
import marshmallow  # noqa: F401
import orjson  # noqa: F401
import requests  # noqa: F401
import urllib3  # noqa: F401


@functions_framework.http
def trivial(request):
    return {"data": {}}
