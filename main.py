"""The Google Cloud Functions entry point: `relay`.

Deploy with `--entry-point=relay`; run locally with
`functions-framework --target=relay`. Everything else lives in the `relay`
package (import names from it, never `import relay.x`: that would rebind
the name `relay` defined below).
"""

import functions_framework
from werkzeug.exceptions import HTTPException

from relay.app import RelayApp, http_error_response

# Built once per instance and reused across invocations; a bad setting stops start-up here.
_relay_app = RelayApp.from_env()


# Flask's own errors (such as the framework's /favicon.ico 404) answer JSON too, never HTML.
functions_framework.errorhandler(HTTPException)(http_error_response)


@functions_framework.http
def relay(request):
    return _relay_app.handle(request)
