//! boto3 from the project's venv against a test's emulator: the independent eye on what imagectl did in AWS.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use super::Emulator;

/// Defined for every script: `json`, `base64`, clients `ec2 s3 ssm sqs sns iam` of us-east-1, and `ec2r(region)`.
const PREAMBLE: &str = "import json, base64, boto3\n\
ec2, s3, ssm, sqs, sns, iam = (boto3.client(n) for n in ('ec2', 's3', 'ssm', 'sqs', 'sns', 'iam'))\n\
def ec2r(region): return boto3.client('ec2', region_name=region)\n";

/// Runs Python with boto3 against the emulator and returns what it printed.
pub fn python(emulator: &Emulator, script: &str) -> String {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    let output = Command::new(python)
        .args(["-c", &format!("{PREAMBLE}{script}")])
        .env_clear()
        .envs(emulator.env())
        .output()
        .expect("run python");
    assert!(output.status.success(), "boto3 script failed:\n{script}\n{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("python prints UTF-8")
}

/// The same, from async code.
pub async fn python_async(emulator: &Arc<Emulator>, script: String) -> String {
    let emulator = emulator.clone();
    tokio::task::spawn_blocking(move || python(&emulator, &script)).await.unwrap()
}
