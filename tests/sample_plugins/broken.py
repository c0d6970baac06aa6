"""A plugin whose notifications all raise: the other plugins must still be told, and the router go on.

Loaded after ``recorder`` (``plugin_modules: [recorder.py, broken.py]``), so pluggy calls it first.
"""

from __future__ import annotations

from router.hooks.specs import hookimpl


class Boom(RuntimeError):
    pass


@hookimpl
def router_startup(process: str) -> None:
    raise Boom(f"broken plugin at start-up of {process}")


@hookimpl
def router_association_accepted(calling_ae: str) -> None:
    raise Boom("broken plugin on an association")


@hookimpl
def router_instance_stored(outcome: str) -> None:
    raise Boom("broken plugin on a stored instance")


@hookimpl
def router_hl7_acknowledged(ack_code: str) -> None:
    raise Boom("broken plugin on an acknowledgement")


@hookimpl
def router_shutdown(process: str) -> None:
    raise Boom(f"broken plugin at shut-down of {process}")
