//! The build pipeline: the executor's `BuildImage` step. Launch a build instance, hand it the job (SSM Run Command
//! or user data), follow its reports in the logs bucket, judge the result, stop it, capture the image, terminate it.
//!
//! A build takes up to hours and the apply running it may be killed at any point, so the pipeline is resumable and
//! never duplicates anything: it is found by its build ID alone (tag `imagectl:build-id` on the instance and the
//! image, the SSM command's comment, the report keys), and every phase first looks for what an earlier run did.
//!
//! | phase   | done when                                   | resumes by                                          |
//! |---------|---------------------------------------------|-----------------------------------------------------|
//! | launch  | an instance tagged with the build ID lives  | `DescribeInstances` by tag; `RunInstances` with the build ID as `ClientToken` |
//! | deliver | (SSM) a command commented with the build ID | `ListCommands` for the instance                     |
//! | run     | `result.json` exists in the logs bucket     | polling; the deadline counts from the launch (or the command), read from AWS |
//! | capture | an image tagged with the build ID exists    | `DescribeImages` by tag; a duplicate name is looked up by name |
//! | finish  | the instance is terminated                  | `TerminateInstances` is idempotent                  |
//!
//! Every failure publishes its state (Issues Found or Investigating) and terminates the instance. An interruption
//! (the process killed) leaves everything as it is for the next apply to resume.

use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, HttpTokensState, IamInstanceProfileSpecification, Image, ImageState, Instance,
    InstanceMetadataEndpointState, InstanceMetadataOptionsRequest, InstanceNetworkInterfaceSpecification, InstanceType,
    ResourceType, ShutdownBehavior, TagSpecification, VolumeType,
};
use aws_sdk_s3::presigning::PresigningConfig;

use super::error::{Absent, Context};
use super::read::{
    bucket_region, ec2_filter, ec2_sdk_tags, get_object_with, parse_report, snapshot_ids, LIVE_INSTANCE_STATES,
};
use super::{base64, ec2_client, s3_client, ssm_client, Aws, AwsError};
use crate::build::{
    judge, script, tags, BuildPlan, BuildState, InstanceJob, InstanceResult, InstanceStatus, JobPackage, Notification,
    ReportKeys, ReportUrls,
};
use crate::model::{Delivery, Platform};

/// Beyond the installer's timeout, the build gets as long again (at most this) for booting, downloading the
/// packages, scanning and generalizing.
const MAX_MARGIN: Duration = Duration::from_secs(30 * 60);
/// How long after launch the SSM agent may take to come online (first boot of a Windows image takes minutes).
const AGENT_WINDOW: Duration = Duration::from_secs(10 * 60);
/// How long a just-created instance profile may stay unknown to EC2 (IAM is eventually consistent).
const PROFILE_WINDOW: Duration = Duration::from_secs(2 * 60);
/// How long a just-created automation role may refuse to be assumed.
const ROLE_WINDOW: Duration = Duration::from_secs(60);
/// How long stopping the instance may take.
const STOP_WINDOW: Duration = Duration::from_secs(15 * 60);
/// How long capturing the image may take (snapshots of large volumes are slow).
const IMAGE_WINDOW: Duration = Duration::from_secs(3 * 60 * 60);
/// The longest a SigV4 presigned URL can live.
const MAX_PRESIGN: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// Polling of the reports: from 1 s, doubling, up to 15 s.
const POLL_FIRST: Duration = Duration::from_secs(1);
const POLL_MAX: Duration = Duration::from_secs(15);
/// `ClientToken` takes at most 64 characters; the role session name too.
const TOKEN_MAX: usize = 64;

/// Runs (or resumes) one build. With `wait` false it returns once the instance has been launched and handed its
/// job; a later run finds it and carries on.
pub(super) async fn run(aws: &Aws, plan: &BuildPlan, wait: bool) -> Result<(), AwsError> {
    let build = match Build::connect(aws, plan).await {
        Ok(build) => build,
        Err(error) => {
            publish(aws, plan, BuildState::Investigating, &error.to_string(), None).await;
            return Err(error);
        }
    };
    build.run(wait).await
}

/// Stops a build that an interrupted apply was running: terminates its instance (a half-built instance costs money
/// and holds a half-installed system) and publishes Investigating. An image already captured is left alone.
pub(super) async fn cancel(aws: &Aws, plan: &BuildPlan, why: &str) -> Result<(), AwsError> {
    let build = Build::connect(aws, plan).await?;
    if build.find_image().await?.is_some() {
        return Ok(());
    }
    if build.terminate_all().await? {
        publish(aws, plan, BuildState::Investigating, why, None).await;
    }
    // A mark under the build's prefix, so that the next plan counts this revision as used: reusing the build ID
    // would reuse its RunInstances ClientToken, which on AWS answers with the terminated instance.
    let key = format!("imagectl/builds/{}/cancelled.json", plan.build_id);
    let body = serde_json::json!({ "buildId": plan.build_id, "reason": why }).to_string();
    build
        .logs
        .put_object()
        .bucket(&plan.logs_bucket)
        .key(&key)
        .body(aws_sdk_s3::primitives::ByteStream::from(body.into_bytes()))
        .send()
        .await
        .during(format_args!("PutObject {key}"))?;
    Ok(())
}

/// A build instance as the pipeline sees it.
#[derive(Debug, Clone)]
struct BuildInstance {
    id: String,
    state: String,
    launched: SystemTime,
}

impl BuildInstance {
    fn from_sdk(instance: &Instance) -> Option<Self> {
        Some(BuildInstance {
            id: instance.instance_id()?.to_owned(),
            state: instance.state().and_then(|s| s.name()).map(|n| n.as_str().to_owned()).unwrap_or_default(),
            launched: instance
                .launch_time()
                .and_then(|t| SystemTime::try_from(*t).ok())
                .unwrap_or_else(SystemTime::now),
        })
    }

    fn is_gone(&self) -> bool {
        matches!(self.state.as_str(), "shutting-down" | "terminated")
    }
}

/// Why a build failed: the state to publish, and the error to return.
struct Failure {
    state: BuildState,
    error: AwsError,
}

impl From<AwsError> for Failure {
    /// An AWS error is an infrastructure failure: Investigating, with AWS's own error.
    fn from(error: AwsError) -> Self {
        Failure { state: BuildState::Investigating, error }
    }
}

struct Build<'a> {
    aws: &'a Aws,
    plan: &'a BuildPlan,
    /// Clients with the build's credentials (the automation role's, when the plan names one).
    ec2: aws_sdk_ec2::Client,
    ssm: aws_sdk_ssm::Client,
    logs: aws_sdk_s3::Client,
    logs_region: String,
    keys: ReportKeys,
    operation: String,
}

impl<'a> Build<'a> {
    async fn connect(aws: &'a Aws, plan: &'a BuildPlan) -> Result<Build<'a>, AwsError> {
        let operation = format!("BuildImage {}", plan.build_id);
        let sdk = match &plan.automation_role_arn {
            Some(role) => assume_role(aws, role, &plan.build_id).await?,
            None => aws.sdk().clone(),
        };
        let region = plan.region.as_str();
        // The seeds require the logs bucket in the image's region; ask rather than assume (one request).
        let logs_region = bucket_region(aws, &plan.logs_bucket).await?.ok_or_else(|| {
            AwsError::new(
                &operation,
                Some("NoSuchBucket"),
                format!("the logs bucket {} does not exist", plan.logs_bucket),
            )
        })?;
        Ok(Build {
            aws,
            plan,
            ec2: ec2_client(&sdk, region),
            ssm: ssm_client(&sdk, region),
            logs: s3_client(&sdk, &logs_region),
            logs_region,
            keys: ReportKeys::for_build(&plan.build_id),
            operation,
        })
    }

    async fn run(&self, wait: bool) -> Result<(), AwsError> {
        let Err(failure) = self.phases(wait).await else {
            return Ok(());
        };
        publish(self.aws, self.plan, failure.state, &notification_message(&failure.error), None).await;
        // Also on failure: an instance left running costs money and holds a half-installed system.
        if let Err(e) = self.terminate_all().await {
            tracing::warn!("{}: could not terminate its instance: {e}", self.operation);
        }
        Err(failure.error)
    }

    async fn phases(&self, wait: bool) -> Result<(), Failure> {
        if let Some(image) = self.find_image().await? {
            return self.finish(image, false).await;
        }
        let instance = match self.find_instance().await? {
            Some(instance) => instance,
            None => {
                if let Some(result) = self.result().await? {
                    return self.finished_without_instance(&result);
                }
                self.launch().await?
            }
        };
        if instance.is_gone() {
            return Err(self.investigating(format!(
                "build instance {} is {}; build {} cannot launch another (its ID is the launch's idempotency token): plan again for a new revision",
                instance.id, instance.state, self.plan.build_id
            )));
        }
        let started = match self.plan.settings.delivery {
            Delivery::Ssm => self.deliver_by_ssm(&instance).await?,
            Delivery::UserData => instance.launched,
        };
        if !wait {
            return Ok(());
        }
        let result = self.await_result(&instance, started).await?;
        let (state, verdict) = judge(&result, &self.log_location());
        if state != BuildState::Scanning {
            return Err(Failure { state, error: AwsError::new(&self.operation, Some(code_of(state)), verdict) });
        }
        let image = self.capture(&instance).await?;
        self.finish(image, true).await
    }

    // Launch.

    async fn find_instance(&self) -> Result<Option<BuildInstance>, AwsError> {
        let mut instances = self.find_instances(&LIVE_INSTANCE_STATES).await?;
        instances.sort_by_key(|i| i.launched);
        let mut instances = instances.into_iter();
        let first = instances.next();
        // Two instances of one build: only from a race (or an API that ignored the ClientToken). Keep the first.
        let extra: Vec<String> = instances.filter(|i| !i.is_gone()).map(|i| i.id).collect();
        if !extra.is_empty() {
            tracing::warn!("{}: terminating duplicate build instances {}", self.operation, extra.join(", "));
            self.terminate(&extra).await?;
        }
        Ok(first)
    }

    async fn find_instances(&self, states: &[&str]) -> Result<Vec<BuildInstance>, AwsError> {
        let request = self
            .ec2
            .describe_instances()
            .filters(ec2_filter(&format!("tag:{}", tags::BUILD_ID), [self.plan.build_id.as_str()]))
            .filters(ec2_filter("instance-state-name", states.iter().copied()));
        let mut pages = request.into_paginator().send();
        let mut instances = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.during(format_args!("DescribeInstances build {}", self.plan.build_id))?;
            instances
                .extend(page.reservations().iter().flat_map(|r| r.instances()).filter_map(BuildInstance::from_sdk));
        }
        Ok(instances)
    }

    async fn describe_instance(&self, id: &str) -> Result<Option<BuildInstance>, AwsError> {
        let answer = self.ec2.describe_instances().instance_ids(id).send().await;
        let answer =
            answer.during(format_args!("DescribeInstances {id}")).absent_on(&["InvalidInstanceID.NotFound"])?;
        Ok(answer.and_then(|a| a.reservations().iter().flat_map(|r| r.instances()).find_map(BuildInstance::from_sdk)))
    }

    async fn launch(&self) -> Result<BuildInstance, AwsError> {
        let plan = self.plan;
        let settings = &plan.settings;
        let operation = format!("RunInstances build {}", plan.build_id);
        let mut instance_tags = plan.tags.clone();
        instance_tags.insert(tags::LOGS_BUCKET.to_owned(), plan.logs_bucket.clone());
        let tag_specification = |resource_type| {
            TagSpecification::builder()
                .resource_type(resource_type)
                .set_tags(Some(ec2_sdk_tags(&instance_tags)))
                .build()
        };
        let mut request = self
            .ec2
            .run_instances()
            .client_token(token(&plan.build_id))
            .image_id(plan.base_image.as_str())
            .instance_type(InstanceType::from(settings.instance_type.as_str()))
            .min_count(1)
            .max_count(1)
            .iam_instance_profile(IamInstanceProfileSpecification::builder().name(&plan.instance_profile).build())
            .metadata_options(
                InstanceMetadataOptionsRequest::builder()
                    .http_tokens(HttpTokensState::Required)
                    .http_endpoint(InstanceMetadataEndpointState::Enabled)
                    .build(),
            )
            // The script powers the instance off when done: stopped, it waits to be captured.
            .instance_initiated_shutdown_behavior(ShutdownBehavior::Stop)
            .tag_specifications(tag_specification(ResourceType::Instance))
            .tag_specifications(tag_specification(ResourceType::Volume))
            .set_block_device_mappings(Some(block_devices(plan, true)));
        request = match &plan.subnet {
            Some(subnet) => request.network_interfaces(
                InstanceNetworkInterfaceSpecification::builder()
                    .device_index(0)
                    .subnet_id(subnet)
                    .set_groups((!plan.security_groups.is_empty()).then(|| plan.security_groups.clone()))
                    .associate_public_ip_address(plan.associate_public_ip)
                    .delete_on_termination(true)
                    .build(),
            ),
            None => {
                request.set_security_group_ids((!plan.security_groups.is_empty()).then(|| plan.security_groups.clone()))
            }
        };
        if settings.delivery == Delivery::UserData {
            let job = self.job().await?;
            request = request.user_data(base64(script::user_data(&job).as_bytes()));
        }

        let started = SystemTime::now();
        let mut pause = Duration::from_secs(2);
        let answer = loop {
            match request.clone().send().await.during(&operation) {
                Ok(answer) => break answer,
                Err(e) if profile_not_ready(&e) && elapsed(started) < PROFILE_WINDOW => {
                    tracing::info!(
                        "{operation}: instance profile {} not usable yet, retrying: {e}",
                        plan.instance_profile
                    );
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(POLL_MAX);
                }
                Err(e) => return Err(e),
            }
        };
        let instance = answer
            .instances()
            .first()
            .and_then(BuildInstance::from_sdk)
            .ok_or_else(|| AwsError::new(&operation, None, "RunInstances returned no instance"))?;
        if !instance.is_gone() {
            let message = format!("launched build instance {} from {}", instance.id, plan.base_image);
            publish(self.aws, plan, BuildState::Building, &message, None).await;
        }
        Ok(instance)
    }

    // Deliver.

    /// Sends the SSM command unless an earlier run did; returns when it was sent (the run's start).
    async fn deliver_by_ssm(&self, instance: &BuildInstance) -> Result<SystemTime, Failure> {
        let listed = self.ssm.list_commands().instance_id(&instance.id).send().await;
        let listed = listed.during(format_args!("ListCommands {}", instance.id))?;
        if let Some(command) = listed.commands().iter().find(|c| c.comment() == Some(self.plan.build_id.as_str())) {
            return Ok(command
                .requested_date_time()
                .and_then(|t| SystemTime::try_from(*t).ok())
                .unwrap_or(instance.launched));
        }
        let job = self.job().await?;
        let document = match self.plan.settings.platform {
            Platform::Linux => "AWS-RunShellScript",
            Platform::Windows => "AWS-RunPowerShellScript",
        };
        let execution_timeout = (self.timeout() + self.margin()).as_secs().to_string();
        let request = self
            .ssm
            .send_command()
            .instance_ids(&instance.id)
            .document_name(document)
            .comment(&self.plan.build_id)
            .parameters("commands", script::ssm_commands(&job))
            .parameters("executionTimeout", vec![execution_timeout])
            .output_s3_region(&self.logs_region)
            .output_s3_bucket_name(&self.plan.logs_bucket)
            .output_s3_key_prefix(format!("imagectl/builds/{}/ssm/", self.plan.build_id));
        // Not DescribeInstanceInformation: SendCommand itself says whether the agent is online (InvalidInstanceId).
        let mut pause = Duration::from_secs(5);
        loop {
            let answer = request.clone().send().await.during(format_args!("SendCommand {}", instance.id));
            match answer {
                Ok(answer) => {
                    let sent = answer
                        .command()
                        .and_then(|c| c.requested_date_time())
                        .and_then(|t| SystemTime::try_from(*t).ok());
                    return Ok(sent.unwrap_or_else(SystemTime::now));
                }
                Err(e) if e.has_code("InvalidInstanceId") => {
                    if SystemTime::now() >= instance.launched + AGENT_WINDOW {
                        return Err(self.investigating(format!(
                            "the SSM agent never came online on {} within {} minutes of its launch: the base image needs the SSM agent, the instance profile the SSM permissions (AmazonSSMManagedInstanceCore) and the subnet a route to SSM",
                            instance.id,
                            AGENT_WINDOW.as_secs() / 60
                        )));
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(30));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The job handed to the instance: presigned URLs only, signed with the caller's own credentials (see
    /// `presign_expiry`).
    async fn job(&self) -> Result<InstanceJob, AwsError> {
        let plan = self.plan;
        let expiry = PresigningConfig::expires_in(self.presign_expiry())
            .map_err(|e| AwsError::new(&self.operation, None, format!("presigning: {e}")))?;
        let artifacts_region = if plan.artifacts_bucket == plan.logs_bucket {
            self.logs_region.clone()
        } else {
            bucket_region(self.aws, &plan.artifacts_bucket).await?.ok_or_else(|| {
                AwsError::new(
                    &self.operation,
                    Some("NoSuchBucket"),
                    format!("the artifacts bucket {} does not exist", plan.artifacts_bucket),
                )
            })?
        };
        let artifacts = self.aws.s3(&artifacts_region);
        let mut packages = Vec::new();
        for package in &plan.packages {
            let request = artifacts.get_object().bucket(&plan.artifacts_bucket).key(&package.key);
            let url =
                request.presigned(expiry.clone()).await.during(format_args!("presign GetObject {}", package.key))?;
            packages.push(JobPackage {
                file_name: package.file_name.clone(),
                url: url.uri().to_owned(),
                sha256: package.sha256.clone(),
            });
        }
        let logs = self.aws.s3(&self.logs_region);
        let put = |key: String| {
            let request = logs.put_object().bucket(&plan.logs_bucket).key(&key);
            let expiry = expiry.clone();
            async move {
                let url = request.presigned(expiry).await.during(format_args!("presign PutObject {key}"))?;
                Ok::<_, AwsError>(url.uri().to_owned())
            }
        };
        let (status, log, result, scan) = tokio::try_join!(
            put(self.keys.status.clone()),
            put(self.keys.log.clone()),
            put(self.keys.result.clone()),
            put(self.keys.scan.clone())
        )?;
        let settings = &plan.settings;
        Ok(InstanceJob {
            build_id: plan.build_id.clone(),
            platform: settings.platform,
            packages,
            installer: plan.installer.clone(),
            installer_arguments: settings.installer_arguments.clone(),
            timeout_seconds: self.timeout().as_secs(),
            scan_command: settings.scan_command.clone(),
            builtin_scan: settings.builtin_scan,
            generalize: settings.generalize,
            report: ReportUrls { status, log, result, scan },
            power_off_when_done: true,
        })
    }

    // Run.

    /// Polls the reports until the result is written, the deadline passes or the instance is gone.
    async fn await_result(&self, instance: &BuildInstance, started: SystemTime) -> Result<InstanceResult, Failure> {
        let deadline = started + self.timeout() + self.margin();
        let mut pause = POLL_FIRST;
        let mut scanning_published = false;
        for poll in 0u64.. {
            if let Some(result) = self.result().await? {
                return Ok(self.went_through_scanning(result, scanning_published).await);
            }
            if !scanning_published {
                let status = get_object_with(&self.logs, &self.plan.logs_bucket, &self.keys.status).await?;
                let status: Option<InstanceStatus> =
                    status.and_then(|bytes| parse_report(&self.plan.logs_bucket, &self.keys.status, &bytes));
                if status.is_some_and(|s| s.state == BuildState::Scanning) {
                    publish(self.aws, self.plan, BuildState::Scanning, "installed; scanning", None).await;
                    scanning_published = true;
                }
            }
            let now = SystemTime::now();
            if now >= deadline {
                return Err(self.investigating(format!(
                    "no result from instance {} within {} (the {}-minute timeout and a margin); log: {}",
                    instance.id,
                    minutes(deadline.duration_since(started).unwrap_or_default()),
                    self.plan.settings.timeout_minutes,
                    self.log_location()
                )));
            }
            // Now and then, whether the instance still runs: one that stopped or vanished will never report.
            if poll % 4 == 3 {
                let current = self.describe_instance(&instance.id).await?;
                let state = current.as_ref().map_or("terminated", |i| i.state.as_str()).to_owned();
                if matches!(state.as_str(), "stopped" | "shutting-down" | "terminated") {
                    if let Some(result) = self.result().await? {
                        return Ok(self.went_through_scanning(result, scanning_published).await);
                    }
                    return Err(self.investigating(format!(
                        "build instance {} is {state} but reported no result; log: {}",
                        instance.id,
                        self.log_location()
                    )));
                }
            }
            tokio::time::sleep(pause.min(deadline.duration_since(now).unwrap_or_default())).await;
            pause = (pause * 2).min(POLL_MAX);
        }
        unreachable!("the poll loop returns")
    }

    /// A result whose scan ran went through Scanning. An instance quicker than the polls (or one that finished
    /// before this run started) passed it unseen: publish it now, so that subscribers see every transition of the
    /// seller guide, Building → Scanning → the verdict.
    async fn went_through_scanning(&self, result: InstanceResult, published: bool) -> InstanceResult {
        if !published && result.scan.is_some() {
            publish(self.aws, self.plan, BuildState::Scanning, "installed; scanned", None).await;
        }
        result
    }

    async fn result(&self) -> Result<Option<InstanceResult>, AwsError> {
        let bytes = get_object_with(&self.logs, &self.plan.logs_bucket, &self.keys.result).await?;
        Ok(bytes.and_then(|bytes| parse_report(&self.plan.logs_bucket, &self.keys.result, &bytes)))
    }

    /// The result exists but neither instance nor image: an earlier run finished this build.
    fn finished_without_instance(&self, result: &InstanceResult) -> Result<(), Failure> {
        let (state, verdict) = judge(result, &self.log_location());
        if state != BuildState::Scanning {
            // Already published and terminated by the run that judged it; say it again, do nothing again.
            return Err(Failure { state, error: AwsError::new(&self.operation, Some(code_of(state)), verdict) });
        }
        if !self.plan.keep_image {
            return Ok(()); // A test build, captured and deregistered by the run that finished it.
        }
        Err(self.investigating(format!(
            "build {} succeeded but its instance is gone and no image was captured (terminated before capture?): plan again for a new revision",
            self.plan.build_id
        )))
    }

    // Capture.

    async fn capture(&self, instance: &BuildInstance) -> Result<Image, Failure> {
        self.stop(instance).await?;
        // Another apply may have captured it meanwhile.
        if let Some(image) = self.find_image().await? {
            return Ok(image);
        }
        let plan = self.plan;
        let operation = format!("CreateImage {} from {}", plan.ami_name, instance.id);
        let request = self
            .ec2
            .create_image()
            .instance_id(&instance.id)
            .name(&plan.ami_name)
            .set_description(plan.description.clone())
            .no_reboot(plan.settings.no_reboot)
            // The image only: snapshot tags follow with CreateTags (the emulator rejects snapshot specifications).
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Image)
                    .set_tags(Some(ec2_sdk_tags(&plan.tags)))
                    .build(),
            )
            .set_block_device_mappings(Some(block_devices(plan, false)).filter(|m| !m.is_empty()));
        let image_id = match request.send().await.during(&operation) {
            Ok(answer) => answer.image_id().unwrap_or_default().to_owned(),
            Err(e) if e.has_code("InvalidAMIName.Duplicate") => {
                let found = self.find_image_named(&plan.ami_name).await?;
                match found {
                    Some(image) if ec2_tag(&image, tags::BUILD_ID) == Some(plan.build_id.as_str()) => return Ok(image),
                    _ => {
                        return Err(self.investigating(format!(
                            "an image named {} already exists and is not build {}'s: deregister it or change the image name",
                            plan.ami_name, plan.build_id
                        )))
                    }
                }
            }
            Err(e) => return Err(e.into()),
        };
        self.wait_image(&image_id).await
    }

    async fn stop(&self, instance: &BuildInstance) -> Result<(), Failure> {
        let started = SystemTime::now();
        let mut state = instance.state.clone();
        let mut pause = Duration::from_secs(2);
        loop {
            match state.as_str() {
                "stopped" => return Ok(()),
                "running" => {
                    let request = self.ec2.stop_instances().instance_ids(&instance.id);
                    request.send().await.during(format_args!("StopInstances {}", instance.id))?;
                }
                "shutting-down" | "terminated" => {
                    return Err(self.investigating(format!(
                        "build instance {} was terminated before its image was captured",
                        instance.id
                    )))
                }
                _ => {} // pending, stopping
            }
            if elapsed(started) > STOP_WINDOW {
                return Err(self.investigating(format!(
                    "build instance {} did not stop within {}",
                    instance.id,
                    minutes(STOP_WINDOW)
                )));
            }
            let current = self.describe_instance(&instance.id).await?;
            state = current.map_or_else(|| "terminated".to_owned(), |i| i.state);
            if state != "stopped" {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(POLL_MAX);
            }
        }
    }

    async fn find_image(&self) -> Result<Option<Image>, AwsError> {
        let request = self
            .ec2
            .describe_images()
            .owners("self")
            .filters(ec2_filter(&format!("tag:{}", tags::BUILD_ID), [self.plan.build_id.as_str()]));
        let answer = request.send().await.during(format_args!("DescribeImages build {}", self.plan.build_id))?;
        Ok(answer.images().first().cloned())
    }

    async fn find_image_named(&self, name: &str) -> Result<Option<Image>, AwsError> {
        let request = self.ec2.describe_images().owners("self").filters(ec2_filter("name", [name]));
        let answer = request.send().await.during(format_args!("DescribeImages name={name}"))?;
        Ok(answer.images().first().cloned())
    }

    /// Waits until the image is available. Right after `CreateImage`, AWS may not know the ID yet for a moment.
    async fn wait_image(&self, image_id: &str) -> Result<Image, Failure> {
        let started = SystemTime::now();
        let mut pause = Duration::from_secs(2);
        loop {
            let answer = self.ec2.describe_images().image_ids(image_id).send().await;
            let answer =
                answer.during(format_args!("DescribeImages {image_id}")).absent_on(&["InvalidAMIID.NotFound"])?;
            if let Some(image) = answer.as_ref().and_then(|a| a.images().first()) {
                match image.state() {
                    Some(ImageState::Available) => return Ok(image.clone()),
                    Some(ImageState::Pending) | None => {}
                    Some(state) => {
                        let reason = image.state_reason().and_then(|r| r.message()).unwrap_or("no reason given");
                        let message = format!("image {image_id} is {}: {reason}", state.as_str());
                        // A failed image is garbage that would stand in this build's way: remove it.
                        if let Err(e) = self.delete_image(image).await {
                            tracing::warn!("{}: could not remove failed image {image_id}: {e}", self.operation);
                        }
                        return Err(self.investigating(message));
                    }
                }
            }
            if elapsed(started) > IMAGE_WINDOW {
                return Err(
                    self.investigating(format!("image {image_id} was not available within {}", minutes(IMAGE_WINDOW)))
                );
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(POLL_MAX);
        }
    }

    // Finish.

    /// The image exists: make sure it is available, its snapshots tagged and the instance gone; publish Successful
    /// (when this run captured it, or terminated the instance that a killed run left behind); drop a test build's
    /// image.
    async fn finish(&self, image: Image, captured_now: bool) -> Result<(), Failure> {
        let image_id = image.image_id().unwrap_or_default().to_owned();
        let image = match image.state() {
            Some(ImageState::Available) => image,
            _ => self.wait_image(&image_id).await?,
        };
        let snapshots = snapshot_ids(&image);
        if !snapshots.is_empty() {
            let request = self
                .ec2
                .create_tags()
                .set_resources(Some(snapshots.clone()))
                .set_tags(Some(ec2_sdk_tags(&self.plan.tags)));
            request.send().await.during(format_args!("CreateTags snapshots of {image_id}"))?;
        }
        let terminated = self.terminate_all().await?;
        if captured_now || terminated {
            let message = format!("image {image_id} ({}) is available", self.plan.ami_name);
            publish(self.aws, self.plan, BuildState::Successful, &message, Some(&image_id)).await;
        }
        if !self.plan.keep_image {
            self.delete_image(&image).await?;
        }
        Ok(())
    }

    /// Terminates every live instance of the build; whether there was any.
    async fn terminate_all(&self) -> Result<bool, AwsError> {
        let live = self.find_instances(&["pending", "running", "stopping", "stopped"]).await?;
        let ids: Vec<String> = live.into_iter().map(|i| i.id).collect();
        if ids.is_empty() {
            return Ok(false);
        }
        self.terminate(&ids).await?;
        Ok(true)
    }

    async fn terminate(&self, ids: &[String]) -> Result<(), AwsError> {
        let request = self.ec2.terminate_instances().set_instance_ids(Some(ids.to_vec()));
        request
            .send()
            .await
            .during(format_args!("TerminateInstances {}", ids.join(" ")))
            .absent_on(&["InvalidInstanceID.NotFound"])?;
        Ok(())
    }

    /// Deregisters the image and deletes its snapshots (deregistering alone leaves them, and their cost, behind).
    async fn delete_image(&self, image: &Image) -> Result<(), AwsError> {
        let image_id = image.image_id().unwrap_or_default();
        let request = self.ec2.deregister_image().image_id(image_id);
        request
            .send()
            .await
            .during(format_args!("DeregisterImage {image_id}"))
            .absent_on(&["InvalidAMIID.NotFound", "InvalidAMIID.Unavailable"])?;
        for snapshot in snapshot_ids(image) {
            let request = self.ec2.delete_snapshot().snapshot_id(&snapshot);
            request
                .send()
                .await
                .during(format_args!("DeleteSnapshot {snapshot}"))
                .absent_on(&["InvalidSnapshot.NotFound"])?;
        }
        Ok(())
    }

    // Helpers.

    fn timeout(&self) -> Duration {
        Duration::from_secs(u64::from(self.plan.settings.timeout_minutes) * 60)
    }

    /// As long again as the timeout, at most 30 minutes: booting, downloads, scan and generalization.
    fn margin(&self) -> Duration {
        self.timeout().min(MAX_MARGIN)
    }

    /// The URLs are used from the start of the run (downloads, first status) to its end (the result): they live as
    /// long as the product waits — timeout, margin and the agent's window — capped at SigV4's 7 days. They are
    /// signed with the caller's credentials: temporary ones (SSO, an assumed role) end the URLs' validity with
    /// their session, whatever the expiry says.
    fn presign_expiry(&self) -> Duration {
        (self.timeout() + self.margin() + AGENT_WINDOW).min(MAX_PRESIGN)
    }

    fn log_location(&self) -> String {
        format!("s3://{}/{}", self.plan.logs_bucket, self.keys.log)
    }

    fn investigating(&self, message: String) -> Failure {
        Failure {
            state: BuildState::Investigating,
            error: AwsError::new(&self.operation, Some("Investigating"), message),
        }
    }
}

/// The message of a build failure as users read it in a notification: a verdict alone, an AWS error whole.
fn notification_message(error: &AwsError) -> String {
    match error.code.as_deref() {
        Some("IssuesFound" | "Investigating") => error.message.clone(),
        _ => error.to_string(),
    }
}

fn code_of(state: BuildState) -> &'static str {
    match state {
        BuildState::IssuesFound => "IssuesFound",
        _ => "Investigating",
    }
}

/// Assumes the automation role for the build's calls. Tried once up front — with retries while a just-created role
/// is not yet assumable, and for a clear error otherwise — then handed to the clients as a provider that assumes
/// it again whenever the session nears its end, since a build may outlast one session.
async fn assume_role(aws: &Aws, role_arn: &str, build_id: &str) -> Result<SdkConfig, AwsError> {
    let session = session_name(build_id);
    let started = SystemTime::now();
    let mut pause = Duration::from_secs(2);
    loop {
        let request = aws.sts().assume_role().role_arn(role_arn).role_session_name(&session);
        let answer = request.send().await.during(format_args!("AssumeRole {role_arn}"));
        match answer {
            Ok(_) => break,
            Err(e) if e.has_code("AccessDenied") && elapsed(started) < ROLE_WINDOW => {
                tracing::info!("automation role {role_arn} not assumable yet, retrying: {e}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(POLL_MAX);
            }
            Err(e) => return Err(e),
        }
    }
    let provider =
        aws_config::sts::AssumeRoleProvider::builder(role_arn).session_name(session).configure(aws.sdk()).build().await;
    Ok(aws
        .sdk()
        .to_builder()
        .credentials_provider(aws_sdk_sts::config::SharedCredentialsProvider::new(provider))
        .build())
}

/// Publishes a state change to the build's topic, with the caller's credentials. Notifications are at least once
/// and best effort: a failed publish is logged, never fails a build.
async fn publish(aws: &Aws, plan: &BuildPlan, state: BuildState, message: &str, image_id: Option<&str>) {
    let Some(topic_arn) = &plan.topic_arn else {
        return;
    };
    let Some(region) = topic_arn.split(':').nth(3) else {
        return;
    };
    let notification = Notification {
        stack: plan.stack.clone(),
        resource: plan.resource.clone(),
        build_id: plan.build_id.clone(),
        state,
        message: message.to_owned(),
        logs: format!("s3://{}/imagectl/builds/{}/", plan.logs_bucket, plan.build_id),
        image_id: image_id.map(str::to_owned),
    };
    let subject: String = format!("imagectl {}: {state}", plan.resource).chars().take(100).collect();
    let body = serde_json::to_string(&notification).expect("notifications serialize");
    let request = aws.sns(region).publish().topic_arn(topic_arn).subject(subject).message(body);
    if let Err(e) = request.send().await.during(format_args!("Publish {topic_arn}")) {
        tracing::warn!("build {}: could not publish {state}: {e}", plan.build_id);
    }
}

/// The block devices of the settings, for `RunInstances` (`launch`) or `CreateImage`, which takes no encryption
/// settings (snapshots inherit the volumes').
fn block_devices(plan: &BuildPlan, launch: bool) -> Vec<BlockDeviceMapping> {
    plan.settings
        .block_devices
        .iter()
        .map(|device| {
            let mut ebs = EbsBlockDevice::builder()
                .delete_on_termination(true)
                .set_volume_size(device.volume_size.map(|s| s as i32))
                .set_volume_type(device.volume_type.as_deref().map(VolumeType::from))
                .set_iops(device.iops.map(|i| i as i32))
                .set_throughput(device.throughput.map(|t| t as i32));
            if launch {
                ebs = ebs.set_encrypted(device.encrypted).set_kms_key_id(device.kms_key.clone());
            }
            BlockDeviceMapping::builder().device_name(&device.device_name).ebs(ebs.build()).build()
        })
        .collect()
}

/// Whether `RunInstances` refused the instance profile as unknown: right after its creation that is IAM's eventual
/// consistency (AWS: InvalidParameterValue "Invalid IAM Instance Profile name"; the emulator: NoSuchEntity).
fn profile_not_ready(error: &AwsError) -> bool {
    let message = error.message.to_ascii_lowercase();
    error.has_code("NoSuchEntity")
        || (error.has_code("InvalidParameterValue")
            && (message.contains("iam instance profile") || message.contains("iaminstanceprofile")))
}

/// The build ID as an idempotency token: itself when it fits in 64 characters, else a prefix and a hash.
fn token(build_id: &str) -> String {
    if build_id.len() <= TOKEN_MAX {
        return build_id.to_owned();
    }
    use sha2::{Digest, Sha256};
    let hash = hex::encode(&Sha256::digest(build_id.as_bytes())[..8]);
    format!("{}-{hash}", &build_id[..TOKEN_MAX - hash.len() - 1])
}

/// A role session name (`[\w+=,.@-]{2,64}`) from the build ID.
fn session_name(build_id: &str) -> String {
    let cleaned: String =
        build_id.chars().map(|c| if c.is_ascii_alphanumeric() || "+=,.@-_".contains(c) { c } else { '-' }).collect();
    token(&format!("imagectl-{cleaned}"))
}

fn ec2_tag<'i>(image: &'i Image, key: &str) -> Option<&'i str> {
    image.tags().iter().find(|t| t.key() == Some(key)).and_then(|t| t.value())
}

fn elapsed(since: SystemTime) -> Duration {
    since.elapsed().unwrap_or_default()
}

fn minutes(duration: Duration) -> String {
    let seconds = duration.as_secs();
    if seconds % 60 == 0 {
        format!("{} min", seconds / 60)
    } else {
        format!("{seconds} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_fit_in_64_characters() {
        assert_eq!(token("web-r1-0123abcd"), "web-r1-0123abcd");
        let long = format!("{}-r1-0123abcd", "x".repeat(80));
        let t = token(&long);
        assert_eq!(t.len(), 64);
        assert_ne!(t, token(&format!("{}-r2-0123abcd", "x".repeat(80))));
        assert_eq!(session_name("web/base-r1"), "imagectl-web-base-r1");
    }

    #[test]
    fn profile_errors_are_recognized() {
        let aws = AwsError::new(
            "RunInstances",
            Some("InvalidParameterValue"),
            "Value (p) for parameter iamInstanceProfile.name is invalid. Invalid IAM Instance Profile name",
        );
        assert!(profile_not_ready(&aws));
        assert!(profile_not_ready(&AwsError::new(
            "RunInstances",
            Some("NoSuchEntity"),
            "Instance profile p not found"
        )));
        assert!(!profile_not_ready(&AwsError::new(
            "RunInstances",
            Some("InvalidParameterValue"),
            "Invalid value for instanceType"
        )));
    }
}
