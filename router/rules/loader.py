"""Reading rule files: YAML in ``rules_dir``, in file-name order, every problem reported as ``file:line: msg``.

Whatever a file holds, loading it ends with rules or problems, never an exception, in bounded time and memory: a
file nested deeper than ``MAX_DEPTH``, or whose YAML aliases expand to more than ``MAX_VALUES`` values (the
"billion laughs": nine lists of nine references to the one before are 387 million values to walk), is refused
before any rule is read, and a rule that cannot be read is a problem of its own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydicom.datadict import tag_for_keyword

from router.config import RouterConfig
from router.intake.stage import Stage
from router.rules.model import Condition, Rule, RuleSet, StageCall
from router.rules.patterns import PatternError, compile_any_of

RULE_KEYS = {"name", "when", "then", "stop", "description"}
WHEN_KEYS = {"kind", "calling_ae", "called_ae", "source", "sop_class", "message", "tags"}
KINDS = {"dicom", "hl7", "mpps"}
MAX_NAME = 128  # the outbox records the rule that made each job
MAX_DEPTH = 64  # nested lists and mappings in a rule file (a rule needs fewer than ten)
MAX_VALUES = 100_000  # values in a rule file once its YAML aliases are expanded
_TAG_RE = re.compile(r"^\(?([0-9A-Fa-f]{4}),?([0-9A-Fa-f]{4})\)?$")


@dataclass
class LoadResult:
    ruleset: RuleSet
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # the folder is not there: no rules, not a refusal

    @property
    def ok(self) -> bool:
        return not self.problems


class _Problems(list[str]):
    def add(self, path: Path, node: yaml.Node, message: str) -> None:
        self.append(f"{path}:{node.start_mark.line + 1}: {message}")


def _value(node: yaml.Node) -> Any:
    return yaml.SafeLoader(" ").construct_object(node, deep=True)


def _mapping(node: yaml.Node) -> list[tuple[str, yaml.Node, yaml.Node]] | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    return [(str(_value(k)), k, v) for k, v in node.value]


def parse_tag(key: str) -> tuple[int, str] | None:
    """A DICOM keyword (``PatientName``) or tag (``(0010,0010)``, ``00100010``)."""
    found = _TAG_RE.match(key.strip())
    if found:
        return int(found.group(1) + found.group(2), 16), key
    tag = tag_for_keyword(key.strip())
    return (tag, key) if tag is not None else None


def _condition(path: Path, node: yaml.Node, problems: _Problems) -> Condition:
    entries = _mapping(node)
    if entries is None:
        problems.add(path, node, "'when' must be a mapping")
        return Condition()
    found: dict[str, Any] = {}
    for key, knode, vnode in entries:
        if key not in WHEN_KEYS:
            problems.add(path, knode, f"unknown condition {key!r} (expected one of {sorted(WHEN_KEYS)})")
            continue
        try:
            if key == "kind":
                kinds = _value(vnode)
                kinds = kinds if isinstance(kinds, list) else [kinds]
                bad = [k for k in kinds if k not in KINDS]
                if bad:
                    problems.add(path, vnode, f"unknown kind {bad[0]!r} (expected one of {sorted(KINDS)})")
                found["kinds"] = tuple(str(k) for k in kinds)
            elif key == "tags":
                found["tags"] = _tags(path, vnode, problems)
            else:
                found[key] = compile_any_of(_value(vnode))
        except PatternError as exc:
            problems.add(path, vnode, f"{key}: {exc}")
    return Condition(**found)


def _tags(path: Path, node: yaml.Node, problems: _Problems) -> tuple[tuple[int, str, Any], ...]:
    entries = _mapping(node)
    if entries is None:
        problems.add(path, node, "'tags' must map DICOM keywords or tags to patterns")
        return ()
    out = []
    for key, knode, vnode in entries:
        parsed = parse_tag(key)
        if parsed is None:
            problems.add(path, knode, f"unknown DICOM keyword or tag {key!r}")
            continue
        try:
            out.append((parsed[0], parsed[1], compile_any_of(_value(vnode))))
        except PatternError as exc:
            problems.add(path, vnode, f"tags.{key}: {exc}")
    return tuple(out)


def _stage_calls(
    path: Path,
    node: yaml.Node,
    stages: Mapping[str, Stage],
    config: RouterConfig,
    problems: _Problems,
) -> tuple[StageCall, ...]:
    if not isinstance(node, yaml.SequenceNode):
        problems.add(path, node, "'then' must be a list of stages")
        return ()
    calls = []
    for item in node.value:
        entries = _mapping(item)
        where_node: yaml.Node = item
        if isinstance(item, yaml.ScalarNode):
            name, args = str(_value(item)), None
        elif entries is not None and len(entries) == 1:
            name, where_node, args_node = entries[0]
            args = _value(args_node)
        else:
            problems.add(path, item, "each stage is 'name' or 'name: arguments' (one key)")
            continue
        stage = stages.get(name)
        if stage is None:
            problems.add(path, where_node, f"unknown stage {name!r} (known: {', '.join(sorted(stages))})")
            continue
        for message in stage.check(args, config):
            problems.add(path, where_node, f"{name}: {message}")
        where = f"{path.name}:{where_node.start_mark.line + 1}"
        calls.append(StageCall(stage=name, args=args, where=where))
    return tuple(calls)


def _rules_in_file(path: Path, stages: Mapping[str, Stage], config: RouterConfig, problems: _Problems) -> list[Rule]:
    try:
        text = path.read_text(encoding="utf-8")
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 1
        problems.append(f"{path}:{line}: not valid YAML: {exc.problem}")
        return []
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{path}:1: cannot read: {exc}")
        return []
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow (control characters...)
        line = text[: exc.position].count("\n") + 1
        char = f"#x{exc.character:04x}" if isinstance(exc.character, int) else repr(exc.character)
        problems.append(f"{path}:{line}: not valid YAML: character {char} is not allowed")
        return []
    except RecursionError:
        problems.append(f"{path}:1: not valid YAML: nested too deeply")
        return []
    if root is None:
        return []
    too_big = _too_big(root)
    if too_big:
        problems.add(path, root, too_big)
        return []
    if not isinstance(root, yaml.SequenceNode):
        problems.add(path, root, "a rule file is a list of rules")
        return []
    rules = []
    for rnode in root.value:
        try:
            rule = _rule(path, rnode, stages, config, problems)
        except Exception as exc:  # whatever a value holds, it is this rule's problem, not the loader's end
            problems.add(path, rnode, f"this rule cannot be read ({type(exc).__name__})")
            continue
        if rule is not None:
            rules.append(rule)
    return rules


def _too_big(root: yaml.Node) -> str:
    """Why a file's node graph is refused ("" when it is not): deeper than MAX_DEPTH, or more than MAX_VALUES values
    once aliases (shared nodes) are counted every time they are used. Iterative: no recursion to exhaust."""
    expanded: dict[int, int] = {}  # id(node) -> values under it, aliases expanded
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, children_done = stack.pop()
        if depth > MAX_DEPTH:
            return f"nested deeper than {MAX_DEPTH} levels"
        children = _children(node)
        if children_done or not children:
            expanded[id(node)] = 1 + sum(expanded[id(c)] for c in children)
            if expanded[id(node)] > MAX_VALUES:
                return f"more than {MAX_VALUES} values once its YAML aliases are expanded"
            continue
        stack.append((node, depth, True))
        stack.extend((c, depth + 1, False) for c in children if id(c) not in expanded)
    return ""


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _rule(
    path: Path, rnode: yaml.Node, stages: Mapping[str, Stage], config: RouterConfig, problems: _Problems
) -> Rule | None:
    """One rule of a file, or None (its problems added)."""
    entries = _mapping(rnode)
    if entries is None:
        problems.add(path, rnode, "a rule is a mapping with name, when and then")
        return None
    fields = {key: (knode, vnode) for key, knode, vnode in entries}
    for key, (knode, _v) in fields.items():
        if key not in RULE_KEYS:
            problems.add(path, knode, f"unknown rule key {key!r} (expected {sorted(RULE_KEYS)})")
    name = _value(fields["name"][1]) if "name" in fields else None
    if not isinstance(name, str) or not name.strip():
        problems.add(path, rnode, "a rule needs a 'name'")
        return None
    if len(name) > MAX_NAME:
        problems.add(path, fields["name"][1], f"a rule name has at most {MAX_NAME} characters")
    when = _condition(path, fields["when"][1], problems) if "when" in fields else Condition()
    if "then" not in fields:
        problems.add(path, rnode, f"rule {name!r} needs a 'then' list")
        return None
    then = _stage_calls(path, fields["then"][1], stages, config, problems)
    stop = _value(fields["stop"][1]) if "stop" in fields else False
    if not isinstance(stop, bool):
        problems.add(path, fields["stop"][1], "'stop' must be true or false")
        stop = False
    where = f"{path.name}:{rnode.start_mark.line + 1}"
    return Rule(name=name, when=when, then=then, stop=stop, where=where)


def rule_files(rules_dir: Path) -> list[Path]:
    if not rules_dir.is_dir():
        return []
    return sorted(p for p in rules_dir.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


def directory_signature(rules_dir: Path) -> tuple[tuple[str, float, int], ...]:
    """What changes when any rule file is added, removed or edited."""
    sig = []
    for p in rule_files(rules_dir):
        try:
            st = p.stat()
        except OSError:
            continue
        sig.append((p.name, st.st_mtime, st.st_size))
    return tuple(sig)


def load_rules(rules_dir: Path, stages: Mapping[str, Stage], config: RouterConfig) -> LoadResult:
    problems = _Problems()
    signature = directory_signature(rules_dir)
    warnings = []
    if not rules_dir.exists():
        warnings.append(f"{rules_dir}: no such folder, so no rules: nothing is forwarded or changed")
    elif not rules_dir.is_dir():
        problems.append(f"{rules_dir}: not a folder (rules_dir names the folder of the rule files)")
    rules: list[Rule] = []
    files = rule_files(rules_dir)
    for path in files:
        rules.extend(_rules_in_file(path, stages, config, problems))
    seen: dict[str, str] = {}
    for rule in rules:
        if rule.name in seen:
            problems.append(
                f"{rules_dir / rule.where.split(':')[0]}:{rule.where.split(':')[1]}: "
                f"rule name {rule.name!r} already used at {seen[rule.name]}"
            )
        seen.setdefault(rule.name, rule.where)
    ruleset = RuleSet(rules=tuple(rules), files=tuple(p.name for p in files), signature=signature)
    return LoadResult(ruleset=ruleset, problems=list(problems), warnings=warnings)
