"""The portal screenshots the user guide and the portal's tutorial show, in the order a
person meets the pages.

One list for both sides: the browser test (tests/e2e/test_portal_screenshots.py) takes
exactly these, and tests/unit/test_docs_screenshots.py checks that the docs and the
tutorial reference exactly these and that each is committed in the package's static
folder `screenshots/` (where the portal serves them; the docs build copies them).
"""

from __future__ import annotations

SCREENSHOTS: tuple[str, ...] = (
    "portal-logon.png",
    "portal-form.png",
    "portal-download.png",
    "portal-tutorial.png",
    "portal-certdir.png",
    "portal-renew.png",
)

# The size of every screenshot (the browser's viewport), in CSS pixels at scale 1.
WIDTH, HEIGHT = 1000, 700
# No screenshot may be larger (they are committed; the browser test keeps them small).
MAX_BYTES = 80 * 1024

# `scripts/screenshots` sets this to src/mailpki/web/static/screenshots; the normal test run leaves it unset
# and the pictures go into a temporary folder, so the suite never changes the checkout.
OUTPUT_ENV = "MAILPKI_SCREENSHOTS_DIR"
