"""Domain errors of a request, mapped to HTTP statuses once, in ``service/api/app.py``.

The CLI catches the same errors and prints their message, so both front ends refuse a request
for the same reasons with the same words.
"""

from __future__ import annotations


class InvalidRequest(ValueError):
    """The request breaks a rule the schema alone cannot express (422)."""


class PayloadTooLarge(InvalidRequest):
    """Too many documents, or a document too large, for one request (413)."""
