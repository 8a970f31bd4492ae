//! A private-image build as data: its identity (fingerprint, build ID, AMI name), the job handed to the build
//! instance, the reports the instance writes back, and the build states of the seller guide.
//!
//! Pure: the AWS side (launching, waiting, capturing) is `aws::build`; the instance side is the script
//! `script` renders. The two meet only through S3 objects whose keys and formats are defined here.

pub mod script;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::{AmiId, BlockDevice, Delivery, Platform, Region};

/// The build states of the seller guide, for images and package-group test builds alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum BuildState {
    /// The instance is launched and the package group is being installed.
    Building,
    /// The installation succeeded; the image is being scanned.
    Scanning,
    /// Installed, scanned and captured: the image is available.
    Successful,
    /// The installer or the scan failed: the seller's (or the manifest author's) attention is needed.
    #[serde(rename = "Issues Found")]
    IssuesFound,
    /// An infrastructure failure: the agent never came online, a timeout, an AWS error.
    Investigating,
}

impl BuildState {
    pub fn is_final(self) -> bool {
        matches!(self, BuildState::Successful | BuildState::IssuesFound | BuildState::Investigating)
    }
}

impl fmt::Display for BuildState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BuildState::Building => "Building",
            BuildState::Scanning => "Scanning",
            BuildState::Successful => "Successful",
            BuildState::IssuesFound => "Issues Found",
            BuildState::Investigating => "Investigating",
        })
    }
}

/// Every setting that shapes the image; part of the fingerprint, so changing one rebuilds the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildSettings {
    pub platform: Platform,
    pub instance_type: String,
    pub delivery: Delivery,
    pub installer_arguments: Vec<String>,
    pub timeout_minutes: u32,
    pub scan_command: Option<String>,
    pub builtin_scan: bool,
    pub generalize: bool,
    pub no_reboot: bool,
    pub block_devices: Vec<BlockDevice>,
}

/// The identity of an image: the resolved base AMI, the package group's content and every build setting.
pub fn fingerprint(base: &AmiId, package_digest: &str, settings: &BuildSettings) -> String {
    let settings = serde_json::to_string(settings).expect("settings serialize");
    let mut hasher = Sha256::new();
    for part in [base.as_str(), package_digest, &settings] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hex::encode(&hasher.finalize()[..8])
}

/// `<image>-r<revision>-<fingerprint[..8]>`: unique per stack resource and attempt, stable across resumes.
pub fn build_id(resource_name: &str, revision: u32, fingerprint: &str) -> String {
    format!("{resource_name}-r{revision}-{}", &fingerprint[..8.min(fingerprint.len())])
}

/// The AMI name convention: `<imageName>-r<revision, 4 digits>-<fingerprint[..8]>` (at most 16 characters appended).
pub fn ami_name(image_name: &str, revision: u32, fingerprint: &str) -> String {
    format!("{image_name}-r{revision:04}-{}", &fingerprint[..8.min(fingerprint.len())])
}

/// Tags imagectl writes on build instances and images, besides the ownership tags.
pub mod tags {
    pub const BUILD_ID: &str = "imagectl:build-id";
    pub const REVISION: &str = "imagectl:revision";
    pub const FINGERPRINT: &str = "imagectl:fingerprint";
    pub const BASE_IMAGE: &str = "imagectl:base-image";
    pub const PACKAGE_GROUP: &str = "imagectl:package-group";
    pub const PACKAGE_DIGEST: &str = "imagectl:package-digest";
    pub const INSTANCE_TYPE: &str = "imagectl:instance-type";
    pub const SETTINGS_DIGEST: &str = "imagectl:settings-digest";
    /// The bucket the build's reports go to, so that a later run finds them from the instance alone.
    pub const LOGS_BUCKET: &str = "imagectl:logs-bucket";
    /// On copies: the build ID of the source image (or its AMI ID, for an external source).
    pub const SOURCE: &str = "imagectl:source";
    /// On copies: the source image's AMI ID and region.
    pub const SOURCE_IMAGE: &str = "imagectl:source-image";
    /// On package-group test builds: the operating system under test.
    pub const OPERATING_SYSTEM: &str = "imagectl:operating-system";
}

/// Where a build's reports live in its logs bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportKeys {
    /// Written by the instance at each stage: `InstanceStatus`.
    pub status: String,
    /// Installer output (stdout and stderr).
    pub log: String,
    /// Written once by the instance when it is done: `InstanceResult`.
    pub result: String,
    /// The scan report.
    pub scan: String,
}

impl ReportKeys {
    pub fn for_build(build_id: &str) -> Self {
        let prefix = format!("imagectl/builds/{build_id}");
        ReportKeys {
            status: format!("{prefix}/status.json"),
            log: format!("{prefix}/install.log"),
            result: format!("{prefix}/result.json"),
            scan: format!("{prefix}/scan.txt"),
        }
    }
}

/// Content-addressed key of a package file in the artifacts bucket.
pub fn package_key(sha256: &str, file_name: &str) -> String {
    format!("imagectl/packages/{sha256}/{file_name}")
}

/// Key of the record that binds a package-group name to its content, for good.
pub fn package_group_key(name: &str) -> String {
    format!("imagectl/package-groups/{name}.json")
}

/// The record at `package_group_key`: written once (a conditional write), never overwritten.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PackageGroupRecord {
    pub name: String,
    pub content_digest: String,
    /// file name → sha256
    pub packages: BTreeMap<String, String>,
    pub installer: String,
    pub stack: String,
}

/// What the instance is handed: everything it needs, with no AWS credentials (presigned URLs only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceJob {
    pub build_id: String,
    pub platform: Platform,
    /// Downloaded into the working directory before the installer runs; checked against their sha256.
    pub packages: Vec<JobPackage>,
    /// File name of the installer among `packages`.
    pub installer: String,
    pub installer_arguments: Vec<String>,
    /// The installer is killed after this long and the build is Investigating.
    pub timeout_seconds: u64,
    pub scan_command: Option<String>,
    pub builtin_scan: bool,
    pub generalize: bool,
    /// Presigned PUT URLs of the reports.
    pub report: ReportUrls,
    /// Power the instance off when done, so that a later `apply` captures it even if no imagectl waited.
    pub power_off_when_done: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobPackage {
    pub file_name: String,
    /// Presigned GET URL.
    pub url: String,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportUrls {
    pub status: String,
    pub log: String,
    pub result: String,
    pub scan: String,
}

/// Written by the instance to `ReportKeys::status` at each stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    pub build_id: String,
    pub state: BuildState,
    /// UTC, RFC 3339, from the instance's clock.
    pub at: String,
}

/// Written by the instance to `ReportKeys::result` when it has finished (successfully or not).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceResult {
    pub build_id: String,
    /// The installer's exit code; None when it never ran (a download or checksum failed).
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    pub reboot_attempted: bool,
    pub duration_seconds: u64,
    /// Why the installer did not run, when it did not.
    #[serde(default)]
    pub error: Option<String>,
    /// None when the scan did not run (the installation failed first).
    pub scan: Option<ScanResult>,
    pub generalized: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScanResult {
    pub passed: bool,
    pub findings: Vec<String>,
}

/// The verdict on what the instance reported: the state it puts the build in and why, with the log's location.
pub fn judge(result: &InstanceResult, log_location: &str) -> (BuildState, String) {
    if result.reboot_attempted {
        return (BuildState::IssuesFound, format!("the installer tried to reboot the instance; log: {log_location}"));
    }
    if result.timed_out {
        return (
            BuildState::Investigating,
            format!("the installer did not finish within {} s; log: {log_location}", result.duration_seconds),
        );
    }
    if let Some(error) = &result.error {
        return (BuildState::Investigating, format!("{error}; log: {log_location}"));
    }
    match result.exit_code {
        Some(0) => {}
        Some(code) => {
            return (BuildState::IssuesFound, format!("the installer exited with {code}; log: {log_location}"))
        }
        None => return (BuildState::Investigating, format!("the installer did not run; log: {log_location}")),
    }
    match &result.scan {
        Some(scan) if !scan.passed => (
            BuildState::IssuesFound,
            format!("the scan found {} issue(s): {}", scan.findings.len(), scan.findings.join("; ")),
        ),
        _ => (BuildState::Scanning, "installed and scanned".to_owned()),
    }
}

/// Everything the executor needs to run (or resume) one build. Decided by the planner; the executor adds only
/// what exists at run time (instance ID, presigned URLs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildPlan {
    pub build_id: String,
    pub stack: String,
    /// `PrivateImage/name`, or `PackageGroup/name` for a test build.
    pub resource: String,
    pub region: Region,
    pub revision: u32,
    pub fingerprint: String,
    pub base_image: AmiId,
    pub ami_name: String,
    pub description: Option<String>,
    pub settings: BuildSettings,
    pub instance_profile: String,
    /// Role assumed for the build's AWS calls; None builds with the caller's own credentials.
    pub automation_role_arn: Option<String>,
    pub subnet: Option<String>,
    pub security_groups: Vec<String>,
    pub associate_public_ip: bool,
    /// Bucket (and its region) holding the packages.
    pub artifacts_bucket: String,
    pub packages: Vec<BuildPackage>,
    pub installer: String,
    pub logs_bucket: String,
    pub topic_arn: Option<String>,
    /// Tags of the instance and the image (ownership, build ID, fingerprint, base image, package group …).
    pub tags: BTreeMap<String, String>,
    /// Keep the image (false for package-group test builds, which are deregistered once scanned).
    pub keep_image: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildPackage {
    pub file_name: String,
    pub key: String,
    pub sha256: String,
}

/// The message published to the image's SNS topic at every state change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    pub stack: String,
    pub resource: String,
    pub build_id: String,
    pub state: BuildState,
    pub message: String,
    /// `s3://bucket/imagectl/builds/<build-id>/`
    pub logs: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(exit_code: Option<i32>) -> InstanceResult {
        InstanceResult {
            build_id: "b".into(),
            exit_code,
            timed_out: false,
            reboot_attempted: false,
            duration_seconds: 3,
            error: None,
            scan: Some(ScanResult { passed: true, findings: vec![] }),
            generalized: true,
        }
    }

    #[test]
    fn verdicts_follow_the_seller_guide() {
        assert_eq!(judge(&result(Some(0)), "s3://l/k").0, BuildState::Scanning);
        let (state, message) = judge(&result(Some(3)), "s3://l/k");
        assert_eq!(state, BuildState::IssuesFound);
        assert_eq!(message, "the installer exited with 3; log: s3://l/k");
        assert_eq!(judge(&InstanceResult { timed_out: true, ..result(Some(124)) }, "x").0, BuildState::Investigating);
        assert_eq!(
            judge(&InstanceResult { reboot_attempted: true, ..result(Some(0)) }, "x").0,
            BuildState::IssuesFound
        );
        let failed_scan = InstanceResult {
            scan: Some(ScanResult { passed: false, findings: vec!["/root/.bash_history".into()] }),
            ..result(Some(0))
        };
        assert_eq!(judge(&failed_scan, "x").0, BuildState::IssuesFound);
    }

    #[test]
    fn identity_is_stable_and_sensitive() {
        let settings = BuildSettings {
            platform: Platform::Linux,
            instance_type: "t3.medium".into(),
            delivery: Delivery::Ssm,
            installer_arguments: vec![],
            timeout_minutes: 60,
            scan_command: None,
            builtin_scan: true,
            generalize: true,
            no_reboot: false,
            block_devices: vec![],
        };
        let base = AmiId::parse("ami-0123456789abcdef0").unwrap();
        let a = fingerprint(&base, "d1", &settings);
        assert_eq!(a, fingerprint(&base, "d1", &settings));
        assert_ne!(a, fingerprint(&base, "d2", &settings));
        assert_ne!(
            a,
            fingerprint(&base, "d1", &BuildSettings { instance_type: "t3.large".into(), ..settings.clone() })
        );
        assert_eq!(build_id("web-base", 3, &a).len(), "web-base-r3-".len() + 8);
        assert!(ami_name("web-base", 3, &a).starts_with("web-base-r0003-"));
        assert!(ami_name("web-base", 3, &a).len() - "web-base".len() <= crate::validate::AMI_NAME_SUFFIX_LEN);
    }
}
