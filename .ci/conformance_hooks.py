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
- a settlement batch refused 400 for what no schema can say: a line whose
  `gross - fee` is not its `net` (`settlement_line_does_not_add_up`),
  lines that do not add up to the stated total (`settlement_total_mismatch`),
  a CSV batch without its query parameters (`settlement_query_missing`; the
  document lists them for both bodies, a JSON batch does not read them).
  Each is let through only when the request really has that defect,
  recomputed here from the request;
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


def _settlement_lines(case):
    """The (gross, fee, net) of each line and the stated total of a
    settlement batch request, JSON or CSV; None when it cannot be read."""
    body = case.body
    amounts = lambda item: tuple(item.get(name) for name in ("gross", "fee", "net"))
    if isinstance(body, dict):
        lines, total = body.get("lines"), body.get("total")
        if not isinstance(lines, list) or not all(isinstance(line, dict) for line in lines):
            return None
        if total is not None and not isinstance(total, dict):
            return None
        lines = [amounts(line) for line in lines]
        total = None if total is None else amounts(total)
        if not all(isinstance(value, (int, float)) for line in lines + [total or (0, 0, 0)] for value in line):
            return None
        return lines, total
    if isinstance(body, (bytes, str)):
        try:
            text = body.decode() if isinstance(body, bytes) else body
        except UnicodeDecodeError:
            return None
        lines, total = [], None
        for row in text.splitlines()[1:]:
            fields = row.strip().split(",")
            if len(fields) != 5:
                continue
            try:
                amounts = tuple(int(field) for field in fields[2:])
            except ValueError:
                return None
            if fields[0] == "total":
                total = amounts
            else:
                lines.append(amounts)
        return lines, total
    return None


def _settlement_refusal_holds(case, response):
    """Whether a 400 of a settlement batch names a defect the request has."""
    body = _body(response)
    if response.status_code != 400 or not isinstance(body, dict):
        return False
    if case.operation.path != "/v1/settlements" or case.method.upper() != "POST":
        return False
    code = (body.get("error") or {}).get("code")
    if code == "settlement_query_missing":
        query = case.query or {}
        csv = isinstance(case.body, (bytes, str))
        return csv and any(query.get(name) is None for name in ("processor", "batch_id", "settled_at", "currency"))
    read = _settlement_lines(case)
    if read is None:
        return False
    lines, total = read
    if code == "settlement_line_does_not_add_up":
        return any(gross - fee != net for gross, fee, net in lines)
    if code == "settlement_total_mismatch":
        sums = tuple(sum(line[i] for line in lines) for i in range(3))
        return total is not None and sums != tuple(total)
    return False


def _path_admitted(case):
    if not case.path_parameters:
        return True
    validator = case.operation.schema.adapter.jsonschema_validator_cls
    return case._validate_component(ParameterLocation.PATH, case.path_parameters, validator)


@schemathesis.check
def positive_data_acceptance_in_state(ctx, response, case):
    if _ahead(case, response):
        return None
    if _settlement_refusal_holds(case, response):
        return None
    if not _path_admitted(case):
        return None
    return positive_data_acceptance(ctx, response, case)
