"""What every part of the configuration shares: strict models, AE titles, ports, peer names, credentials."""

from __future__ import annotations

from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)


def check_ae_title(value: str) -> str:
    if (
        not 1 <= len(value) <= 16
        or not value.strip()
        or "\\" in value
        or not value.isprintable()
        or not value.isascii()
    ):
        raise ValueError("an AE title is 1-16 printable ASCII characters, not all spaces, without a backslash")
    return value


AETitle = Annotated[str, AfterValidator(check_ae_title)]
Port = Annotated[int, Field(ge=0, le=65535)]
PeerName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^\S+$")]


HostPort = Annotated[str, StringConstraints(pattern=r"^(\[[0-9a-fA-F:.]+\]|[^\s:\[\]]+):[0-9]{1,5}$")]


class ConfigError(Exception):
    """The configuration cannot be used; the message names every offending key."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HttpAuth(Strict):
    bearer_token: str | None = Field(None, min_length=16, description="clients send Authorization: Bearer TOKEN")
    username: str | None = Field(None, min_length=1)
    password: str | None = Field(None, min_length=8)

    @model_validator(mode="after")
    def _pairs(self) -> HttpAuth:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        return self

    @property
    def enabled(self) -> bool:
        return self.bearer_token is not None or self.username is not None
