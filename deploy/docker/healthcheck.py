"""Container health check: GET $HEALTHCHECK_URL (default the API's /healthz); exit 0 on HTTP 200.

Not a SONAE_* variable on purpose: Sonae rejects SONAE_* variables it does not know.
"""

import os
import sys
import urllib.request

url = os.environ.get("HEALTHCHECK_URL") or f"http://127.0.0.1:{os.environ.get('SONAE_API_PORT', '8080')}/healthz"
try:
    with urllib.request.urlopen(url, timeout=2) as response:
        sys.exit(0 if response.status == 200 else 1)
except Exception as exc:
    print(f"unhealthy: {url}: {exc}", file=sys.stderr)
    sys.exit(1)
