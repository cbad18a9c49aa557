"""OpenAI-style errors: every refusal is `{"error": {"message", "type", "param", "code"}}`
with a 4xx status, so OpenAI's client raises its usual exception classes."""

from __future__ import annotations


class ApiError(Exception):
    """A request the server refuses; `status` is the HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str = "invalid_request_error",
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type

    def body(self) -> dict:
        return error_body(self.message, type=self.type, param=self.param, code=self.code)


def error_body(message: str, *, type: str = "invalid_request_error", param=None, code=None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def not_found(video_id: str) -> ApiError:
    return ApiError(404, f"no video with id {video_id!r}", param="video_id", code="not_found")


def not_ready(job: dict, what_to_do: str) -> ApiError:
    return ApiError(409, f"video {job['id']} is {job['status']}, not completed; {what_to_do}", code="video_not_ready")


def video_gone(video_id: str) -> ApiError:
    return ApiError(410, f"video {video_id}'s file is gone from the server's data dir", code="video_gone")
