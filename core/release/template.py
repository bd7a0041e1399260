"""The CloudFormation template as data: loading it and checking parameter values against it.

CloudFormation's short tags (``!Ref``, ``!Sub``, ``!GetAtt`` ...) become their long JSON form so
deploy and the template test read one plain dict. Parameter checks mirror what CloudFormation
itself enforces, so a bad value fails here with one line instead of minutes into a change set.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

TEMPLATE_PATH = Path(__file__).resolve().parents[2] / "cloudformation" / "template.yaml"
# Larger templates must be passed by S3 URL instead of inline.
TEMPLATE_BODY_LIMIT = 51_200


class TemplateError(ValueError):
    """The template or a parameter value is unusable; the message is one line for a person."""


class _CfnLoader(yaml.SafeLoader):
    pass


def _construct(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = tag_suffix if tag_suffix in ("Ref", "Condition") else f"Fn::{tag_suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if name == "Fn::GetAtt":
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


_CfnLoader.add_multi_constructor("!", _construct)


def load_template(path: Path = TEMPLATE_PATH) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise TemplateError(f"cannot read template {path}: {exc.strerror}") from None
    return parse_template(text)


def parse_template(text: str) -> dict[str, Any]:
    try:
        data = yaml.load(text, Loader=_CfnLoader)  # noqa: S506 - a SafeLoader subclass  # nosec B506
    except yaml.YAMLError as exc:
        raise TemplateError(f"template is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or "Resources" not in data:
        raise TemplateError("template has no Resources section")
    return data


@dataclass(frozen=True)
class Parameter:
    name: str
    spec: Mapping[str, Any]

    @property
    def default(self) -> str | None:
        value = self.spec.get("Default")
        return None if value is None else str(value)

    def check(self, value: str) -> str | None:
        """Why ``value`` is not acceptable, or None when it is."""
        spec = self.spec
        hint = spec.get("ConstraintDescription")
        if spec.get("Type") == "Number":
            try:
                number = float(value)
            except ValueError:
                return f"{self.name} must be a number, got {value!r}"
            low, high = spec.get("MinValue"), spec.get("MaxValue")
            if low is not None and number < float(low):
                return f"{self.name} must be at least {low}, got {value}"
            if high is not None and number > float(high):
                return f"{self.name} must be at most {high}, got {value}"
        allowed = spec.get("AllowedValues")
        if allowed is not None and value not in [str(a) for a in allowed]:
            return f"{self.name} must be one of {', '.join(str(a) for a in allowed)}, got {value!r}"
        pattern = spec.get("AllowedPattern")
        if pattern is not None and re.fullmatch(str(pattern), value) is None:
            return f"{self.name} {hint or 'does not match ' + str(pattern)}, got {value!r}"
        min_len = spec.get("MinLength")
        if min_len is not None and len(value) < int(min_len):
            return (
                f"{self.name} must not be empty" if int(min_len) == 1 else f"{self.name} too short"
            )
        return None


def parameters(template: Mapping[str, Any]) -> dict[str, Parameter]:
    return {name: Parameter(name, spec) for name, spec in template.get("Parameters", {}).items()}


def check_values(
    template: Mapping[str, Any], values: Mapping[str, str], *, previous: Mapping[str, str]
) -> dict[str, str]:
    """Every parameter's final value (given, else previous, else default); raise on any error."""
    declared = parameters(template)
    unknown = sorted(set(values) - set(declared))
    if unknown:
        raise TemplateError(
            f"unknown parameter(s) {', '.join(unknown)}; the template takes: "
            + ", ".join(sorted(declared))
        )
    final: dict[str, str] = {}
    missing: list[str] = []
    for name, param in declared.items():
        value = values.get(name, previous.get(name, param.default))
        if value is None:
            missing.append(name)
            continue
        problem = param.check(value)
        if problem:
            raise TemplateError(problem)
        final[name] = value
    if missing:
        raise TemplateError(
            "missing parameter(s): " + ", ".join(f"--parameter {m}=..." for m in missing)
        )
    return final
