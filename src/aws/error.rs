//! `AwsError`: what failed, with AWS's own error code and message, so users can look it up.

use std::error::Error;
use std::fmt;

use aws_sdk_s3::error::{BuildError, DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// A failed AWS call. `code` is AWS's error code (`NoSuchEntity`, `AccessDenied` …) when the service answered;
/// errors that never reached a service (no network, timeouts, credentials) have none.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{operation}: {}{message}", code.as_deref().map(|c| format!("{c}: ")).unwrap_or_default())]
pub struct AwsError {
    pub operation: String,
    pub code: Option<String>,
    pub message: String,
}

impl AwsError {
    pub fn new(operation: impl Into<String>, code: Option<&str>, message: impl Into<String>) -> Self {
        AwsError { operation: operation.into(), code: code.map(str::to_owned), message: message.into() }
    }

    pub fn has_code(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }

    fn from_sdk<E>(operation: String, err: SdkError<E>) -> Self
    where
        E: ProvideErrorMetadata + Error + Send + Sync + 'static,
    {
        let status = err.raw_response().map(|r| r.status().as_u16());
        match err.as_service_error() {
            Some(service) => {
                let code = service.code().map(str::to_owned);
                let message = match (service.message(), &code, status) {
                    (Some(m), _, _) if !m.is_empty() => m.to_owned(),
                    // HEAD responses have no body, hence no message: the status is all there is.
                    (_, Some(_), Some(status)) => format!("HTTP {status}"),
                    // Neither code nor message: an answer the SDK could not make sense of; its own account is best.
                    _ => DisplayErrorContext(&err).to_string(),
                };
                AwsError { operation, code, message }
            }
            None => AwsError { operation, code: None, message: DisplayErrorContext(&err).to_string() },
        }
    }
}

/// Attaches the operation (and the resource it was about) to an SDK error.
pub(crate) trait Context<T> {
    /// `operation` is only formatted when there is an error: pass `format_args!(..)` freely.
    fn during(self, operation: impl fmt::Display) -> Result<T, AwsError>;
}

impl<T, E> Context<T> for Result<T, SdkError<E>>
where
    E: ProvideErrorMetadata + Error + Send + Sync + 'static,
{
    fn during(self, operation: impl fmt::Display) -> Result<T, AwsError> {
        self.map_err(|e| AwsError::from_sdk(operation.to_string(), e))
    }
}

impl<T> Context<T> for Result<T, BuildError> {
    fn during(self, operation: impl fmt::Display) -> Result<T, AwsError> {
        self.map_err(|e| AwsError {
            operation: operation.to_string(),
            code: None,
            message: format!("invalid request: {e}"),
        })
    }
}

/// Turns the errors that mean "it is not there" into `None`.
pub(crate) trait Absent<T> {
    fn absent_on(self, codes: &[&str]) -> Result<Option<T>, AwsError>;
}

impl<T> Absent<T> for Result<T, AwsError> {
    fn absent_on(self, codes: &[&str]) -> Result<Option<T>, AwsError> {
        match self {
            Ok(value) => Ok(Some(value)),
            Err(e) if codes.iter().any(|c| e.has_code(c)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_operation_code_and_message() {
        let e = AwsError::new("CreateRole build", Some("EntityAlreadyExists"), "Role with name build already exists.");
        assert_eq!(e.to_string(), "CreateRole build: EntityAlreadyExists: Role with name build already exists.");
        let e = AwsError::new("ListBuckets", None, "dispatch failure: connection refused");
        assert_eq!(e.to_string(), "ListBuckets: dispatch failure: connection refused");
    }

    #[test]
    fn absent_maps_only_the_named_codes() {
        let missing: Result<(), AwsError> = Err(AwsError::new("GetRole x", Some("NoSuchEntity"), "gone"));
        assert_eq!(missing.absent_on(&["NoSuchEntity"]).unwrap(), None);
        let denied: Result<(), AwsError> = Err(AwsError::new("GetRole x", Some("AccessDenied"), "no"));
        assert!(denied.absent_on(&["NoSuchEntity"]).is_err());
    }
}
