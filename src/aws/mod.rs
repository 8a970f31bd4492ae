//! The AWS boundary: the only module that talks to AWS, reading live state and executing plan steps.
//!
//! Everything above it sees plain data (`live::LiveState`, `plan::Step`) and `AwsError`; no `aws_sdk_*` type
//! leaves this module.

mod build;
mod connect;
mod error;
mod execute;
mod read;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use aws_config::SdkConfig;
use tokio::sync::{OnceCell, Semaphore};

pub use error::AwsError;

use error::Context;

use crate::live::{LiveState, ReadScope};
use crate::model::AccountId;
use crate::plan::step::Step;

/// Requests in flight at once while reading: enough to hide latency, few enough to stay clear of throttling.
const READ_CONCURRENCY: usize = 16;

/// Where and as whom to connect, on top of the SDK's standard chain (`--region`, `--profile`, `--endpoint-url`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectOptions {
    pub region: Option<String>,
    pub profile: Option<String>,
    pub endpoint_url: Option<String>,
}

/// A connection to one AWS account. Cheap to clone; clones share clients and caches.
#[derive(Clone)]
pub struct Aws {
    inner: Arc<Inner>,
}

struct Inner {
    sdk: SdkConfig,
    /// The region the configuration names: where account-wide calls (ListBuckets) go.
    home_region: String,
    iam: aws_sdk_iam::Client,
    sts: aws_sdk_sts::Client,
    s3: RegionalClients<aws_sdk_s3::Client>,
    sns: RegionalClients<aws_sdk_sns::Client>,
    ec2: RegionalClients<aws_sdk_ec2::Client>,
    ssm: RegionalClients<aws_sdk_ssm::Client>,
    account: OnceCell<AccountId>,
    reads: Semaphore,
}

impl std::fmt::Debug for Aws {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Aws").field("region", &self.inner.home_region).finish_non_exhaustive()
    }
}

/// Clients of one regional service, built on first use per region from the shared configuration (credentials,
/// retry, endpoint) and kept, since a client holds its connection pool.
struct RegionalClients<C> {
    clients: Mutex<HashMap<String, C>>,
    build: fn(&SdkConfig, &str) -> C,
}

impl<C: Clone> RegionalClients<C> {
    fn new(build: fn(&SdkConfig, &str) -> C) -> Self {
        RegionalClients { clients: Mutex::new(HashMap::new()), build }
    }

    fn get(&self, sdk: &SdkConfig, region: &str) -> C {
        let mut clients = self.clients.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        clients.entry(region.to_owned()).or_insert_with(|| (self.build)(sdk, region)).clone()
    }
}

impl Aws {
    /// Connects with the SDK's standard chain (environment, profiles, SSO, web identity, `AWS_ENDPOINT_URL` …)
    /// with `options` on top. Fails without a region, since nothing can be read or created without one.
    pub async fn connect(options: &ConnectOptions) -> Result<Aws, AwsError> {
        let sdk = connect::load(options).await?;
        let home_region = sdk.region().map(|r| r.as_ref().to_owned()).expect("connect::load requires a region");
        let inner = Inner {
            iam: aws_sdk_iam::Client::new(&sdk),
            sts: aws_sdk_sts::Client::new(&sdk),
            s3: RegionalClients::new(s3_client),
            sns: RegionalClients::new(sns_client),
            ec2: RegionalClients::new(ec2_client),
            ssm: RegionalClients::new(ssm_client),
            account: OnceCell::new(),
            reads: Semaphore::new(READ_CONCURRENCY),
            home_region,
            sdk,
        };
        Ok(Aws { inner: Arc::new(inner) })
    }

    /// The region the connection was configured with (`--region`, `AWS_REGION`, the profile).
    pub fn region(&self) -> &str {
        &self.inner.home_region
    }

    /// The account the credentials belong to (STS `GetCallerIdentity`, asked once per connection).
    pub async fn account_id(&self) -> Result<AccountId, AwsError> {
        let account = self
            .inner
            .account
            .get_or_try_init(|| async {
                let identity =
                    self.inner.sts.get_caller_identity().send().await.during(format_args!("GetCallerIdentity"))?;
                let account = identity.account().unwrap_or_default();
                AccountId::parse(account).map_err(|e| AwsError::new("GetCallerIdentity", None, e.reason))
            })
            .await?;
        Ok(account.clone())
    }

    /// Reads what exists for `scope`: batched account-wide listings, per-resource calls only where AWS has no
    /// batched read, at most `READ_CONCURRENCY` requests in flight.
    pub async fn read_live(&self, scope: &ReadScope) -> Result<LiveState, AwsError> {
        read::read_live(self, scope).await
    }

    /// Stops a build an interrupted apply was running: terminates its instance and publishes Investigating.
    pub async fn cancel_build(&self, plan: &crate::build::BuildPlan, why: &str) -> Result<(), AwsError> {
        build::cancel(self, plan, why).await
    }

    /// Runs one plan step. Every step is idempotent: a step retried after it succeeded (or half-succeeded) succeeds.
    pub async fn execute(&self, step: &Step) -> Result<(), AwsError> {
        execute::execute(self, step).await
    }

    fn iam(&self) -> &aws_sdk_iam::Client {
        &self.inner.iam
    }

    fn s3(&self, region: &str) -> aws_sdk_s3::Client {
        self.inner.s3.get(&self.inner.sdk, region)
    }

    fn sns(&self, region: &str) -> aws_sdk_sns::Client {
        self.inner.sns.get(&self.inner.sdk, region)
    }

    fn ec2(&self, region: &str) -> aws_sdk_ec2::Client {
        self.inner.ec2.get(&self.inner.sdk, region)
    }

    fn ssm(&self, region: &str) -> aws_sdk_ssm::Client {
        self.inner.ssm.get(&self.inner.sdk, region)
    }

    fn sts(&self) -> &aws_sdk_sts::Client {
        &self.inner.sts
    }

    /// The configuration every client is built from: credentials, retry, timeouts, endpoint.
    fn sdk(&self) -> &SdkConfig {
        &self.inner.sdk
    }

    /// Runs one read request once a slot is free: fan-outs may spawn any number of futures, the semaphore bounds
    /// what reaches AWS. Never hold a slot while waiting for another (one request per call).
    async fn limited<F: Future>(&self, request: F) -> F::Output {
        let _slot = self.inner.reads.acquire().await.expect("the read semaphore is never closed");
        request.await
    }
}

fn s3_client(sdk: &SdkConfig, region: &str) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::config::Builder::from(sdk).region(aws_config::Region::new(region.to_owned()));
    aws_sdk_s3::Client::from_conf(config.build())
}

fn sns_client(sdk: &SdkConfig, region: &str) -> aws_sdk_sns::Client {
    let config = aws_sdk_sns::config::Builder::from(sdk).region(aws_config::Region::new(region.to_owned()));
    aws_sdk_sns::Client::from_conf(config.build())
}

fn ec2_client(sdk: &SdkConfig, region: &str) -> aws_sdk_ec2::Client {
    let config = aws_sdk_ec2::config::Builder::from(sdk).region(aws_config::Region::new(region.to_owned()));
    aws_sdk_ec2::Client::from_conf(config.build())
}

fn ssm_client(sdk: &SdkConfig, region: &str) -> aws_sdk_ssm::Client {
    let config = aws_sdk_ssm::config::Builder::from(sdk).region(aws_config::Region::new(region.to_owned()));
    aws_sdk_ssm::Client::from_conf(config.build())
}

/// Standard base64 with padding (user data, S3 checksums): too small a need for another dependency.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(chunk.get(1).copied().unwrap_or(0)) << 8)
            | u32::from(chunk.get(2).copied().unwrap_or(0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl crate::apply::StepRunner for Aws {
    type Error = AwsError;

    fn run_step(&self, step: &Step) -> impl Future<Output = Result<(), AwsError>> {
        self.execute(step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_pads_like_rfc_4648() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    }

    /// The executor shares one `Aws` across tasks and spawns its futures: all must be `Send`, the handle `Sync`.
    #[allow(dead_code)]
    fn handles_and_futures_cross_threads(aws: &Aws, scope: &ReadScope, step: &Step) {
        fn send<T: Send>(_: T) {}
        fn shared<T: Send + Sync + Clone + 'static>() {}
        shared::<Aws>();
        send(aws.read_live(scope));
        send(aws.execute(step));
        send(aws.account_id());
        send(Aws::connect(&ConnectOptions::default()));
    }
}
