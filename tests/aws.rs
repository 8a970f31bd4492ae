//! Tests against the AWS emulator; each test starts its own moto_server (see tests/support).

mod support;

#[path = "aws/api.rs"]
mod api;
#[path = "aws/build.rs"]
mod build;
#[path = "aws/cli.rs"]
mod cli;
#[path = "aws/distribution.rs"]
mod distribution;
#[path = "aws/distribution_cli.rs"]
mod distribution_cli;
#[path = "aws/instance.rs"]
mod instance;
#[path = "aws/pipeline.rs"]
mod pipeline;

use support::Emulator;

#[test]
fn emulator_starts_and_resets() {
    // Started together, as parallel tests do: each must get a server of its own.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(Emulator::start);
        let b = s.spawn(Emulator::start);
        (a.join().expect("emulator a starts"), b.join().expect("emulator b starts"))
    });
    assert_ne!(a.port(), b.port());
    assert_eq!(a.endpoint_url(), format!("http://127.0.0.1:{}", a.port()));
    assert!(a.env().contains(&("AWS_ENDPOINT_URL".to_string(), a.endpoint_url())));
    // Readiness polls go to /moto-api/ and are not AWS requests.
    assert_eq!(a.request_count(), 0);

    // Unsigned path-style S3 requests (moto does not check signatures): CreateBucket, ListBuckets.
    let (status, body) = a.http("PUT", "/harness-check");
    assert_eq!(status, 200, "{body}");
    assert_eq!(a.request_count(), 1);
    assert!(a.http("GET", "/").1.contains("<Name>harness-check</Name>"));
    assert_eq!(a.request_count(), 2);

    // The other emulator has its own state and its own request log.
    assert!(!b.http("GET", "/").1.contains("harness-check"));
    assert_eq!(b.request_count(), 1);

    a.reset();
    assert!(!a.http("GET", "/").1.contains("harness-check"), "reset left the bucket behind");
    assert_eq!(a.request_count(), 3);
}
