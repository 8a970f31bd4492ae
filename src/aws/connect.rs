//! Loads the SDK configuration: the standard credential and region chain with imagectl's options on top.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{AppName, BehaviorVersion, Region, SdkConfig};

use super::{AwsError, ConnectOptions};

/// Attempts per request, the first included: the standard mode backs off exponentially with jitter and also
/// retries throttling, which is routine at hundreds of resources.
const MAX_ATTEMPTS: u32 = 5;
/// No call imagectl makes takes long; one that hangs (a dead connection) is cut off and retried, so that a
/// scheduled reconciliation job cannot hang forever. The SDK's default connect timeout stays.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);

pub(super) async fn load(options: &ConnectOptions) -> Result<SdkConfig, AwsError> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS))
        .timeout_config(TimeoutConfig::builder().operation_attempt_timeout(ATTEMPT_TIMEOUT).build())
        .app_name(AppName::new("imagectl").expect("a valid app name"));
    if let Some(region) = &options.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(profile) = &options.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(url) = &options.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    let sdk = loader.load().await;
    if sdk.region().is_none() {
        return Err(AwsError::new(
            "connect",
            None,
            "no AWS region configured: pass --region or set AWS_REGION (or a region in the AWS profile)",
        ));
    }
    Ok(sdk)
}
