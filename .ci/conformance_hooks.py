"""Schemathesis hooks of the conformance run (.ci/conformance).

`positive_data_acceptance` expects a request the document calls valid to be
accepted, or refused only with a status the configuration lists for refusals
that depend on the ledger's state (.ci/schemathesis.toml). The run replaces
it with the check below, which is the same check except for two requests it
does not count as valid ones:

- a 400 `min_seq_ahead`: a `min_seq` beyond the tenant's last tenant_seq.
  It depends on the ledger's state too (no document can say how far a
  tenant's history goes). It is let through only when it holds up against
  what the run has seen: the tenant_seq the answer names is below the
  `min_seq` asked for, and not below any tenant_seq a command answered;
- a request whose path parameters the document does not admit. The stateful
  phase fills path parameters from earlier answers by name (the `quota` of
  a seats quota into `POST /v1/quota/{quota}/consume`, which takes runs or
  credits) and still calls the request valid. Schemathesis is pinned, so
  its own validation of a request component is used to tell.
"""

import json

import schemathesis
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import positive_data_acceptance


def _body(response):
    try:
        return json.loads(response.content)
    except (ValueError, TypeError):
        return None


# The highest tenant_seq any answer of the run has carried.
_seen = {"tenant_seq": 0}


@schemathesis.hook
def after_call(context, case, response):
    body = _body(response)
    if 200 <= response.status_code < 300 and isinstance(body, dict):
        seq = body.get("tenant_seq")
        if isinstance(seq, int) and seq > _seen["tenant_seq"]:
            _seen["tenant_seq"] = seq


def _ahead(case, response):
    """Whether the answer is a `min_seq_ahead` consistent with the run."""
    body = _body(response)
    if response.status_code != 400 or not isinstance(body, dict):
        return False
    error = body.get("error") or {}
    if error.get("code") != "min_seq_ahead":
        return False
    details = error.get("details") or {}
    asked, last = details.get("min_seq"), details.get("tenant_seq")
    if not isinstance(asked, int) or not isinstance(last, int):
        return False
    return asked > last >= _seen["tenant_seq"]


def _path_admitted(case):
    if not case.path_parameters:
        return True
    validator = case.operation.schema.adapter.jsonschema_validator_cls
    return case._validate_component(ParameterLocation.PATH, case.path_parameters, validator)


@schemathesis.check
def positive_data_acceptance_in_state(ctx, response, case):
    if _ahead(case, response):
        return None
    if not _path_admitted(case):
        return None
    return positive_data_acceptance(ctx, response, case)
