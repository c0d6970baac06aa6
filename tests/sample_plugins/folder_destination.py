"""A third-party style destination: peers of ``type: folder`` get each forwarded object written as a file.

    peers:
      ARCHIVE: {type: folder, path: /srv/archive}

A job whose object the folder already holds with other bytes is refused (dead-lettered), so the tests can see a
permanent outcome; a folder that is not there makes the peer unreachable (retried with backoff). A peer of
``type: broken`` has a destination that cannot be made (its constructor raises), as a buggy plugin's would.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from router.destinations.base import DestinationContext, Outcome, Unreachable
from router.destinations.payload import job_file
from router.hooks.specs import hookimpl
from router.store.models import Job


class FolderSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    suffix: str = ".dcm"


class FolderDestination:
    ordered: ClassVar[bool] = False
    settings_model = FolderSettings

    def __init__(self, name: str, peer: Any, context: DestinationContext) -> None:
        settings = FolderSettings.model_validate(peer.settings)
        self.folder = Path(settings.path)
        self.suffix = settings.suffix
        self.context = context

    @property
    def alive(self) -> bool:
        return False  # nothing held open between batches

    def send(self, jobs: Sequence[Job]) -> Iterator[Outcome]:
        if not self.folder.is_dir():
            raise Unreachable(f"folder {self.folder} is not there")
        for job in jobs:
            with job_file(self.context.engine, self.context.config, job) as path:
                data = path.read_bytes()
            target = self.folder / f"{job.sop_uid}{self.suffix}"
            if target.exists() and target.read_bytes() != data:
                yield Outcome.permanent(job, f"{target.name} holds another version")
                continue
            part = target.with_suffix(".part")
            part.write_bytes(data)
            os.replace(part, target)
            yield Outcome.done(job, reason=f"written to {target}")

    def close(self) -> None:
        pass


class BrokenDestination(FolderDestination):
    def __init__(self, name: str, peer: Any, context: DestinationContext) -> None:
        raise RuntimeError("this destination cannot be made")


@hookimpl
def router_destinations(peer_type: str) -> type[FolderDestination] | None:
    return {"folder": FolderDestination, "broken": BrokenDestination}.get(peer_type)
