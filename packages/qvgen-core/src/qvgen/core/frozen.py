"""`Frozen`: the one pydantic base for every qvgen config, manifest and report model."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Frozen(BaseModel):
    """Immutable, rejects unknown fields, and uses attribute docstrings as field descriptions (JSON schema)."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)
