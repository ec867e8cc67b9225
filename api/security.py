"""The admin API key: header ``X-API-Key``, compared in constant time.

No key configured means the admin routes are closed (403), not open.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyHeader

from streamrec.settings import Settings

API_KEY_HEADER = "X-API-Key"
_api_key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False)


async def require_api_key(
    request: Request, presented: Annotated[str | None, Depends(_api_key_header)]
) -> None:
    settings: Settings = request.app.state.settings
    if settings.api_key is None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "admin API disabled: set STREAMREC_API_KEY")
    if not presented:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            f"missing {API_KEY_HEADER} header",
            headers={"WWW-Authenticate": API_KEY_HEADER},
        )
    expected = settings.api_key.get_secret_value().encode()
    if not secrets.compare_digest(presented.encode(), expected):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"invalid {API_KEY_HEADER}")


AdminKey = Depends(require_api_key)
