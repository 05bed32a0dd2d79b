//! The one error type every `wms-serve` handler returns. Each variant maps to an HTTP status and
//! a JSON body `{code, type, message}` in TorchServe's error shape; messages describe what the
//! client sent or can do, never server internals (those are logged, with the request's model).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(
        "the request body is empty; hint: send the image bytes as the body or a multipart field"
    )]
    EmptyBody,
    #[error("the request body is not an image; hint: send a JPEG or PNG photo")]
    NotAnImage,
    #[error("{format} images are not supported; hint: send a JPEG or PNG photo")]
    UnsupportedFormat { format: String },
    #[error(
        "the image could not be decoded ({detail}); hint: the file may be truncated or corrupt"
    )]
    CorruptImage { detail: String },
    #[error("the request body exceeds max_request_size ({limit} bytes)")]
    BodyTooLarge { limit: usize },
    #[error(
        "the image is {width}x{height} = {pixels} pixels, over the limit of {limit}; hint: downscale it before sending"
    )]
    TooManyPixels {
        width: u32,
        height: u32,
        pixels: u64,
        limit: u64,
    },
    #[error(
        "the image has {bits}-bit channels, over max_image_bit_depth ({limit}); hint: send an 8-bit JPEG or PNG"
    )]
    BitDepthTooHigh { bits: u8, limit: u8 },
    #[error(
        "decoding the {width}x{height} image needs {needed} bytes, over the decode memory budget of {budget}; hint: downscale it or send an 8-bit RGB JPEG"
    )]
    OverDecodeBudget {
        width: u32,
        height: u32,
        needed: u64,
        budget: u64,
    },
    #[error(
        "the server is busy decoding other images (waited {seconds} s); hint: retry after the Retry-After delay"
    )]
    DecodeBusy { seconds: u64 },
    #[error("the request body did not arrive within {seconds} s (body_read_timeout)")]
    BodyTimeout { seconds: u64 },
    #[error("invalid multipart body: {detail}")]
    BadMultipart { detail: String },
    #[error(
        "the multipart body has no image field; hint: send the photo in a field named `image`, `file` or `data`"
    )]
    MissingImageField,
    #[error("model {name} is not loaded; hint: GET /models on the management API lists models")]
    ModelNotFound { name: String },
    #[error("model {name} has no version {version}; loaded: {loaded}")]
    VersionNotFound {
        name: String,
        version: String,
        loaded: String,
    },
    #[error("invalid query: {detail}")]
    BadQuery { detail: String },
    #[error("the model is still warming up; hint: retry once GET /ping reports Healthy")]
    NotReady,
    #[error("the inference queue is full; hint: retry after the Retry-After delay")]
    QueueFull,
    #[error("no response within {seconds} s (default_response_timeout)")]
    Timeout { seconds: u64 },
    #[error("the server is shutting down")]
    ShuttingDown,
    /// Details go to the log only.
    #[error("internal error; the server log has the details")]
    Internal,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        use ApiError::*;
        match self {
            EmptyBody
            | NotAnImage
            | CorruptImage { .. }
            | BadMultipart { .. }
            | MissingImageField
            | BadQuery { .. } => StatusCode::BAD_REQUEST,
            UnsupportedFormat { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            BitDepthTooHigh { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            BodyTooLarge { .. } | TooManyPixels { .. } | OverDecodeBudget { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ModelNotFound { .. } | VersionNotFound { .. } => StatusCode::NOT_FOUND,
            NotReady | QueueFull | DecodeBusy { .. } | ShuttingDown => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// TorchServe-style exception name for the `type` field.
    pub fn kind(&self) -> &'static str {
        use ApiError::*;
        match self {
            EmptyBody => "EmptyBody",
            NotAnImage => "NotAnImage",
            UnsupportedFormat { .. } => "UnsupportedFormat",
            CorruptImage { .. } => "CorruptImage",
            BodyTooLarge { .. } => "RequestTooLarge",
            TooManyPixels { .. } | OverDecodeBudget { .. } => "ImageTooLarge",
            BitDepthTooHigh { .. } => "UnsupportedBitDepth",
            DecodeBusy { .. } => "ServiceUnavailableException",
            BodyTimeout { .. } => "RequestTimeout",
            BadMultipart { .. } => "BadMultipart",
            MissingImageField => "MissingImageField",
            ModelNotFound { .. } | VersionNotFound { .. } => "ModelNotFoundException",
            BadQuery { .. } => "BadRequest",
            NotReady => "ModelNotReady",
            QueueFull => "ServiceUnavailableException",
            Timeout { .. } => "RequestTimeout",
            ShuttingDown => "ShuttingDown",
            Internal => "InternalServerException",
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: u16,
    #[serde(rename = "type")]
    kind: &'a str,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = ErrorBody {
            code: status.as_u16(),
            kind: self.kind(),
            message: self.to_string(),
        };
        let mut resp = (status, Json(body)).into_response();
        if matches!(
            self,
            ApiError::QueueFull | ApiError::NotReady | ApiError::DecodeBusy { .. }
        ) {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}
