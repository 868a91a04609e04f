"""Failures as the API server reports them: a `metav1.Status` with a reason and an HTTP code."""

from __future__ import annotations

from .resources import Kind


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details or {}

    def status(self) -> dict:
        out = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": self.message,
               "reason": self.reason, "code": self.code}
        if self.details:
            out["details"] = self.details
        return out


def _what(kind: Kind) -> str:
    return f"{kind.plural}.{kind.group}" if kind.group else kind.plural


def not_found(kind: Kind, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{_what(kind)} "{name}" not found',
                    {"name": name, "group": kind.group, "kind": kind.plural})


def already_exists(kind: Kind, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{_what(kind)} "{name}" already exists',
                    {"name": name, "group": kind.group, "kind": kind.plural})


def conflict(kind: Kind, name: str, why: str) -> ApiError:
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {_what(kind)} "{name}": {why}',
                    {"name": name, "group": kind.group, "kind": kind.plural})


def invalid(kind: Kind, name: str, causes: list[str]) -> ApiError:
    """`causes` are "field: message" lines, as the API server words them."""
    return ApiError(422, "Invalid", f'{kind.kind}.{kind.group or "core"} "{name}" is invalid: ' + ", ".join(causes),
                    {"name": name, "group": kind.group, "kind": kind.kind,
                     # kubectl prints each cause as "field: message"
                     "causes": [{"reason": "FieldValueInvalid", "message": c.split(": ", 1)[-1],
                                 "field": c.split(": ", 1)[0]} for c in causes]})


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)
