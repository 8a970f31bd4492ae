//! Connecting the library's own AWS client to a test's emulator, as a user with `--endpoint-url` would.

use std::future::Future;
use std::sync::{Arc, Once};

use imagectl::aws::{Aws, ConnectOptions};
use imagectl::model::{Region, Tags};

use super::Emulator;

/// The SDK reads credentials from the environment. Tests run as threads of one process, so the environment is set
/// once, before any test connects, to the same dummy credentials for all, and stripped of a developer's own AWS
/// settings (profile, region, endpoint) that would otherwise leak in — or reach real AWS. Values already right are
/// left alone, so that a test already running never sees them missing.
pub fn isolate_aws_environment() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let wanted = [
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_CONFIG_FILE", "/nonexistent/imagectl-test/config"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/imagectl-test/credentials"),
        ];
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy().into_owned();
            if name.starts_with("AWS_") && !wanted.iter().any(|(w, _)| *w == name) {
                std::env::remove_var(name);
            }
        }
        for (name, value) in wanted {
            if std::env::var(name).ok().as_deref() != Some(value) {
                std::env::set_var(name, value);
            }
        }
    });
}

/// Runs `test` against a fresh emulator, connected through the public API.
pub fn with_emulator<F, Fut>(test: F)
where
    F: FnOnce(Arc<Emulator>, Aws) -> Fut,
    Fut: Future<Output = ()>,
{
    isolate_aws_environment();
    // Shared with the test, and kept here until it ends: the server stops when the last handle goes.
    let emulator = Arc::new(Emulator::start());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let options = ConnectOptions {
            region: Some("us-east-1".into()),
            endpoint_url: Some(emulator.endpoint_url()),
            profile: None,
        };
        let aws = Aws::connect(&options).await.expect("connect to the emulator");
        test(emulator.clone(), aws).await;
    });
}

pub fn region(name: &str) -> Region {
    Region::parse(name).unwrap()
}

pub fn tags(pairs: &[(&str, &str)]) -> Tags {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}
