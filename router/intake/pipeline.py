"""Running the matching rules' stages over an envelope, in rule-file order.

Stage order is decided here and by the rule files, never by plugin registration order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine

from router.config import RouterConfig
from router.intake.envelope import Envelope
from router.intake.stage import PlannedForward, Stage, StageContext, StageError
from router.rules.matching import Subject, dataset_values, matching_rules
from router.rules.model import Rule, RuleSet

MPPS_SOP_CLASS = "1.2.840.10008.3.1.2.3.3"


@dataclass(frozen=True)
class Step:
    rule: str
    stage: str
    where: str
    text: str


@dataclass
class PipelineResult:
    rules: list[Rule] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    forwards: list[PlannedForward] = field(default_factory=list)
    resends: list[tuple[str, str]] = field(default_factory=list)


def subject_for(env: Envelope) -> Subject:
    if env.kind == "hl7":
        msg = env.message
        return Subject(
            kind="hl7",
            calling_ae=msg.sending_application,
            called_ae=msg.receiving_application,
            source=env.source.protocol,
            message=msg.message_type,
        )
    if env.kind == "mpps":  # the step as it stands after this message: N-SET rules can test N-CREATE values
        mpps = env.message
        return Subject(
            kind="mpps",
            calling_ae=env.source.calling_ae,
            called_ae=env.source.called_ae,
            source=env.source.protocol,
            sop_class=MPPS_SOP_CLASS,
            message=mpps.operation,
            values=dataset_values(mpps.state),
        )
    return Subject(
        kind=env.kind,
        calling_ae=env.source.calling_ae,
        called_ae=env.source.called_ae,
        source=env.source.protocol,
        sop_class=env.sop_class_uid,
        values=_header_values(env),
    )


def _header_values(env: Envelope) -> Callable[[int], list[str]]:
    """``dataset_values`` of the envelope's header, decoded only when a rule tests a tag: most rules test the
    kind, the calling AE or the SOP class, which the envelope knows without decoding."""
    values: Callable[[int], list[str]] | None = None

    def get(tag: int) -> list[str]:
        nonlocal values
        if values is None:
            values = dataset_values(env.header)
        return values(tag)

    return get


def run_pipeline(
    env: Envelope,
    ruleset: RuleSet,
    stages: Mapping[str, Stage],
    config: RouterConfig,
    dry_run: bool = False,
    engine: Engine | None = None,
) -> PipelineResult:
    """Match ``env`` and run every stage of every matching rule. Raises StageError if a stage fails."""
    result = PipelineResult(rules=matching_rules(ruleset, subject_for(env)))
    ctx = StageContext(config=config, engine=engine, dry_run=dry_run)
    for rule in result.rules:
        ctx.rule = rule.name
        for call in rule.then:
            stage = stages.get(call.stage)
            if stage is None:  # the plugin went away after the rules were loaded
                raise StageError(f"{call.where}: stage {call.stage!r} is not available")
            try:
                text = stage.run(env, call.args, ctx)
            except StageError as exc:
                raise StageError(f"rule {rule.name!r} ({call.where}) stage {call.stage}: {exc}") from exc
            except Exception as exc:
                raise StageError(f"rule {rule.name!r} ({call.where}) stage {call.stage} crashed: {exc!r}") from exc
            result.steps.append(Step(rule=rule.name, stage=call.stage, where=call.where, text=text))
    result.forwards = ctx.forwards
    result.resends = ctx.resends
    return result
