"""OpenAPI descriptions of the upload routes, which read their bodies by streaming (so FastAPI cannot infer them)."""

from __future__ import annotations

from pydantic import BaseModel, Field, create_model

from catdog.inference.records import ANSWER_FIELDS, DETECTOR_FIELDS, FIELD_NOTES

# The fields of `catdog predict`'s records, with their notes (`catdog.inference.records`).
_ANSWER_TYPES = {"path": str, "label": str, "p_dog": float}
Record = create_model(
    "Record",
    **{name: (_ANSWER_TYPES[name], Field(description=FIELD_NOTES[name])) for name in ANSWER_FIELDS},
    **{name: (float | None, Field(None, description=FIELD_NOTES[name])) for name in DETECTOR_FIELDS},
)


class Results(BaseModel):
    results: list[Record]


class Problem(BaseModel):
    detail: str


def _errors(*codes: int) -> dict:
    meaning = {401: "missing or wrong API key", 413: "image too large, or too many files",
               415: "not an image", 422: "undecodable or corrupt image, or no image sent",
               501: "Grad-CAM is not available in this install",
               503: "queue full: retry after Retry-After seconds", 504: "no answer within the timeout"}
    return {code: {"model": Problem, "description": meaning[code]} for code in codes}


def _body(many: bool) -> dict:
    files = {"type": "array", "items": {"type": "string", "format": "binary"}} if many else \
        {"type": "string", "format": "binary"}
    return {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "properties": {"file": files}, "required": ["file"]}},
        "image/*": {"schema": {"type": "string", "format": "binary"},
                    "description": "a raw image body; its name from the X-Filename header"}}}}


PREDICT = dict(
    summary="Classify one or more images",
    description="Send images as multipart field `file` (repeatable) or one raw image body. "
                "One record per image, in order, with the same fields as `catdog predict`.",
    responses={200: {"model": Results}, **_errors(401, 413, 415, 422, 503, 504)},
    openapi_extra=_body(many=True),
)

EXPLAIN = dict(
    summary="Grad-CAM overlay of one image (PNG)",
    description="Where the model looked: a heat map over the image. 501 where `catdog.inference.gradcam` is missing.",
    responses={200: {"content": {"image/png": {}}, "description": "the overlay"},
               **_errors(401, 413, 415, 422, 501, 503, 504)},
    openapi_extra=_body(many=False),
)
