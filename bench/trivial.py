"""The bench's yardstick: a functions-framework function that does nothing but answer.

`functions-framework --target=trivial --source=bench/trivial.py`
"""

import functions_framework


@functions_framework.http
def trivial(request):
    return {"data": {}}
