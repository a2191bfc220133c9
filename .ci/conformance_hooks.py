"""Schemathesis hooks of the conformance run (.ci/conformance).

`positive_data_acceptance` expects a request the document calls valid to be
accepted, or refused only with a status the configuration lists for refusals
that depend on the ledger's state (.ci/schemathesis.toml). The run replaces
it with the check below, which is the same check except for two requests it
does not count as valid ones:

- a 400 `min_seq_ahead`: a `min_seq` beyond the tenant's last tenant_seq.
  It depends on the ledger's state too (no document can say how far a
  tenant's history goes);
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


def _error_code(response):
    try:
        return json.loads(response.content)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


def _path_admitted(case):
    if not case.path_parameters:
        return True
    validator = case.operation.schema.adapter.jsonschema_validator_cls
    return case._validate_component(ParameterLocation.PATH, case.path_parameters, validator)


@schemathesis.check
def positive_data_acceptance_in_state(ctx, response, case):
    if response.status_code == 400 and _error_code(response) == "min_seq_ahead":
        return None
    if not _path_admitted(case):
        return None
    return positive_data_acceptance(ctx, response, case)
