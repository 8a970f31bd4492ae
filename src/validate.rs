//! Turns parsed manifests into the typed model, checking every rule that needs no AWS; reports all problems at once.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::diagnostics::{self, Diagnostic, InvalidManifests, Location};
use crate::graph::DependencyGraph;
use crate::installer_lint;
use crate::manifest::raw::{self, Manifest};
use crate::manifest::SourceDocument;
use crate::model::ids::{check_ami_name, InvalidId};
use crate::model::*;

/// Room left in an AMI name for the `-r<revision>-<fingerprint>` suffix imagectl appends.
pub const AMI_NAME_SUFFIX_LEN: usize = 16;
pub const DEFAULT_INSTANCE_TYPE: &str = "t3.medium";
pub const DEFAULT_TIMEOUT_MINUTES: u32 = 60;
pub const DEFAULT_KEEP_IMAGES: u32 = 3;
const MAX_PACKAGE_GROUP_NAME: usize = 99;

/// Installer extensions the seller guide allows per platform.
pub fn installer_types(platform: Platform) -> &'static [&'static str] {
    match platform {
        Platform::Linux => &["exe", "rpm", "deb", "sh", "run"],
        Platform::Windows => &["msi", "ps1", "bat", "exe"],
    }
}

/// Operating systems a package group may name, per platform.
pub fn operating_systems(platform: Platform) -> &'static [&'static str] {
    match platform {
        Platform::Linux => &[
            "amazon-linux-2",
            "amazon-linux-2023",
            "centos-7",
            "debian-11",
            "debian-12",
            "rhel-8",
            "rhel-9",
            "sles-15",
            "ubuntu-20.04",
            "ubuntu-22.04",
            "ubuntu-24.04",
        ],
        Platform::Windows => {
            &["windows-server-2016", "windows-server-2019", "windows-server-2022", "windows-server-2025"]
        }
    }
}

/// The validated model and the warnings found on the way.
#[derive(Debug)]
pub struct Validated {
    pub model: Model,
    pub warnings: Vec<Diagnostic>,
}

/// Validates parsed documents; `parse_problems` are the loader's diagnostics, reported together with these.
pub fn validate(documents: &[SourceDocument], parse_problems: Vec<Diagnostic>) -> Result<Validated, InvalidManifests> {
    // Documents that did not parse are reported already; a reference to one of them is not dangling, and a
    // document whose kind could not even be read may be the Stack.
    let unparsed: BTreeSet<ResourceId> =
        parse_problems.iter().filter_map(|d| d.resource.as_deref()).filter_map(|r| ResourceId::parse(r).ok()).collect();
    let unidentified = parse_problems.iter().any(|d| d.is_error() && d.resource.is_none());
    let first_document = documents.first().map(|d| d.locate(""));
    let mut checker = Checker { diagnostics: parse_problems, names: BTreeMap::new(), unparsed };
    let mut unique = Vec::new();
    for document in documents {
        let id = id_of(&document.manifest);
        match checker.names.get(&id) {
            Some(first) => {
                let first = documents[*first].locate("metadata.name");
                checker.push(
                    Diagnostic::error(format!(
                        "duplicate {id}: {} named `{}` is already defined at {first}",
                        a(id.kind),
                        id.name
                    ))
                    .at(document.locate("metadata.name"))
                    .field("metadata.name")
                    .help(format!("names are unique within a kind; rename one of the two {}s", id.kind)),
                );
            }
            None => {
                checker.names.insert(id, unique.len());
                unique.push(document);
            }
        }
    }
    let documents = unique;

    let stacks: Vec<_> = documents.iter().filter(|d| matches!(d.manifest, Manifest::Stack(_))).collect();
    let stack = match stacks.as_slice() {
        [one] => checker.stack(one),
        [] if unidentified || checker.unparsed.iter().any(|id| id.kind == Kind::Stack) => {
            None // the Stack is there but did not parse, or may be in a document that did not; that is reported already
        }
        [] => {
            let mut diagnostic = Diagnostic::error("no Stack manifest: exactly one document must have `kind: Stack`")
                .help("add a document: apiVersion: imagectl/v1, kind: Stack, metadata: {name: …}, spec: {region: …}");
            // Every error names a place; here it is where the manifests that were read begin.
            if let Some(location) = first_document {
                diagnostic = diagnostic.at(location);
            }
            checker.push(diagnostic);
            None
        }
        [first, rest @ ..] => {
            for extra in rest {
                checker.push(
                    Diagnostic::error(format!(
                        "a second Stack: the manifests must hold exactly one, and one is defined at {}",
                        first.locate("metadata.name")
                    ))
                    .at(extra.locate("kind"))
                    .resource(id_of(&extra.manifest))
                    .field("kind")
                    .help("validate one stack at a time: pass the directory of one stack"),
                );
            }
            checker.stack(first)
        }
    };

    let mut resources = BTreeMap::new();
    let mut origins = BTreeMap::new();
    for document in &documents {
        let id = id_of(&document.manifest);
        origins.insert(id.clone(), Origin { file: document.file.clone(), positions: document.positions.clone() });
        let context = Context { document, stack: stack.as_ref(), checker: &mut checker };
        if let Some(resource) = context.convert() {
            resources.insert(id, resource);
        }
    }

    let Some(stack) = stack else {
        return Err(finish(checker.diagnostics).unwrap_err());
    };
    let mut model = Model { stack, resources, origins };
    link_shares_to_copies(&mut model);
    check_across_resources(&model, &mut checker);
    check_cycles(&model, &mut checker);

    finish(checker.diagnostics).map(|warnings| Validated { model, warnings })
}

/// Errors fail the run; warnings are handed back.
fn finish(mut diagnostics: Vec<Diagnostic>) -> Result<Vec<Diagnostic>, InvalidManifests> {
    diagnostics::sort(&mut diagnostics);
    if diagnostics.iter().any(Diagnostic::is_error) {
        Err(InvalidManifests { diagnostics })
    } else {
        Ok(diagnostics)
    }
}

fn id_of(manifest: &Manifest) -> ResourceId {
    let (kind, name) = match manifest {
        Manifest::Stack(m) => (Kind::Stack, &m.metadata.name),
        Manifest::Role(m) => (Kind::Role, &m.metadata.name),
        Manifest::InstanceProfile(m) => (Kind::InstanceProfile, &m.metadata.name),
        Manifest::Bucket(m) => (Kind::Bucket, &m.metadata.name),
        Manifest::Topic(m) => (Kind::Topic, &m.metadata.name),
        Manifest::PackageGroup(m) => (Kind::PackageGroup, &m.metadata.name),
        Manifest::PrivateImage(m) => (Kind::PrivateImage, &m.metadata.name),
        Manifest::ImageCopy(m) => (Kind::ImageCopy, &m.metadata.name),
        Manifest::ImageShare(m) => (Kind::ImageShare, &m.metadata.name),
    };
    ResourceId::new(kind, name.clone())
}

struct Checker {
    diagnostics: Vec<Diagnostic>,
    /// Every resource defined, to resolve references: id → index of its document.
    names: BTreeMap<ResourceId, usize>,
    /// Resources whose documents did not parse: defined, but without a model.
    unparsed: BTreeSet<ResourceId>,
}

impl Checker {
    fn push(&mut self, diagnostic: Diagnostic) {
        self.diagnostics.push(diagnostic);
    }

    fn stack(&mut self, document: &SourceDocument) -> Option<Stack> {
        let Manifest::Stack(m) = &document.manifest else {
            return None;
        };
        let region = match Region::parse(&m.spec.region) {
            Ok(region) => region,
            Err(e) => {
                self.push(
                    Diagnostic::error(e.to_string())
                        .at(document.locate("spec.region"))
                        .resource(format!("Stack/{}", m.metadata.name))
                        .field("spec.region"),
                );
                return None;
            }
        };
        for (key, field) in [(&m.metadata.name, "metadata.name")] {
            if key.is_empty()
                || key.len() > 64
                || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                self.push(
                    Diagnostic::error(format!("`{key}` is not a valid stack name"))
                        .at(document.locate(field))
                        .resource(format!("Stack/{key}"))
                        .field(field)
                        .help(
                            "1 to 64 letters, digits, hyphens or underscores: it is written into every ownership tag",
                        ),
                );
            }
        }
        // Checked here, at the Stack: every resource inherits these tags, and an error per resource would point
        // at documents that do not hold the key.
        for key in m.spec.tags.keys().filter(|k| is_reserved_tag(k)) {
            let field = format!("spec.tags.{key}");
            self.push(
                Diagnostic::error(format!("tag key `{key}` is reserved"))
                    .at(document.locate(&field))
                    .resource(format!("Stack/{}", m.metadata.name))
                    .field(field)
                    .help(RESERVED_TAG_HELP),
            );
        }
        Some(Stack { name: m.metadata.name.clone(), region, tags: m.spec.tags.clone() })
    }
}

/// Converts one document, reporting into the checker.
struct Context<'a> {
    document: &'a SourceDocument,
    stack: Option<&'a Stack>,
    checker: &'a mut Checker,
}

impl Context<'_> {
    fn error(&mut self, field: &str, message: impl Into<String>) -> &mut Diagnostic {
        let id = id_of(&self.document.manifest);
        self.checker.push(Diagnostic::error(message).at(self.document.locate(field)).resource(id).field(field));
        self.checker.diagnostics.last_mut().expect("just pushed")
    }

    fn warning(&mut self, field: &str, message: impl Into<String>) -> &mut Diagnostic {
        let id = id_of(&self.document.manifest);
        self.checker.push(Diagnostic::warning(message).at(self.document.locate(field)).resource(id).field(field));
        self.checker.diagnostics.last_mut().expect("just pushed")
    }

    fn check<T>(&mut self, field: &str, parsed: Result<T, InvalidId>) -> Option<T> {
        parsed.map_err(|e| self.error(field, e.to_string())).ok()
    }

    fn tags(&mut self, own: &raw::Tags) -> Tags {
        // The stack's own tags are checked at the Stack.
        for key in own.keys().filter(|k| is_reserved_tag(k)) {
            self.error(&format!("spec.tags.{key}"), format!("tag key `{key}` is reserved")).help =
                Some(RESERVED_TAG_HELP.into());
        }
        let mut tags = self.stack.map(|s| s.tags.clone()).unwrap_or_default();
        tags.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
        tags
    }

    fn region(&mut self, field: &str, written: &Option<String>) -> Option<Region> {
        match written {
            Some(region) => self.check(field, Region::parse(region)),
            None => self.stack.map(|s| s.region.clone()),
        }
    }

    fn lifecycle(metadata: &raw::Metadata) -> Lifecycle {
        Lifecycle {
            deletion_policy: match metadata.deletion_policy {
                raw::DeletionPolicy::Delete => DeletionPolicy::Delete,
                raw::DeletionPolicy::Retain => DeletionPolicy::Retain,
            },
            adopt: metadata.adopt,
        }
    }

    /// Resolves a reference field: a bare name must be a stack resource of `expected` kind; an external resource is
    /// written as its AWS identifier, which `external` parses (None when the value is not such an identifier).
    fn reference<E>(
        &mut self,
        field: &str,
        value: &str,
        expected: Kind,
        external: impl Fn(&str) -> Option<Result<E, InvalidId>>,
        outside: Outside<'_>,
    ) -> Option<Ref<E>> {
        let help = match outside {
            Outside::Identifier(form) => format!(
                "name {} defined in this stack, or reference one outside it by its AWS identifier ({form})",
                a(expected)
            ),
            Outside::Note(note) => format!("name {} defined in this stack; {note}", a(expected)),
        };
        if let Some(parsed) = external(value) {
            return parsed.map(Ref::External).map_err(|e| self.error(field, e.to_string()).help = Some(help)).ok();
        }
        let wanted = ResourceId::new(expected, value);
        if self.checker.names.contains_key(&wanted) {
            return Some(Ref::Stack(wanted));
        }
        if self.checker.unparsed.contains(&wanted) {
            return None; // it is defined, but did not parse: that is the error to fix, and it is reported
        }
        // The resource itself is not what its field meant (an InstanceProfile and its Role often share a name).
        let own = id_of(&self.document.manifest);
        let other = Kind::ALL
            .into_iter()
            .map(|k| ResourceId::new(k, value))
            .find(|id| *id != own && self.checker.names.contains_key(id));
        let message = match other {
            Some(id) => format!("`{value}` is {}, but this field must name {}", a(id.kind), a(expected)),
            None => format!("no {expected} named `{value}` in the manifests"),
        };
        self.error(field, message).help = Some(help);
        None
    }

    fn iam_arn(&mut self, field: &str, value: &str, kind: Kind, resource_type: &'static str) -> Option<Ref<Arn>> {
        let form = format!("arn:aws:iam::<account>:{resource_type}/<name>");
        self.reference(
            field,
            value,
            kind,
            |v| {
                v.starts_with("arn:").then(|| {
                    Arn::parse(v).and_then(|arn| {
                        if arn.service() == "iam" && arn.resource().starts_with(&format!("{resource_type}/")) {
                            Ok(arn)
                        } else {
                            Err(InvalidId { reason: format!("`{v}` is not an IAM {resource_type} ARN") })
                        }
                    })
                })
            },
            Outside::Identifier(&form),
        )
    }

    fn bucket(&mut self, field: &str, value: &str) -> Option<Ref<BucketName>> {
        self.reference(
            field,
            value,
            Kind::Bucket,
            |v| {
                v.starts_with("arn:").then(|| match v.strip_prefix("arn:aws:s3:::") {
                    Some(name) => BucketName::parse(name),
                    None => Err(InvalidId { reason: format!("`{v}` is not an S3 bucket ARN (arn:aws:s3:::<bucket>)") }),
                })
            },
            Outside::Identifier("arn:aws:s3:::<bucket>"),
        )
    }

    fn topic(&mut self, field: &str, value: &str) -> Option<Ref<Arn>> {
        self.reference(
            field,
            value,
            Kind::Topic,
            |v| {
                v.starts_with("arn:").then(|| {
                    Arn::parse(v).and_then(|arn| {
                        if arn.service() == "sns" {
                            Ok(arn)
                        } else {
                            Err(InvalidId { reason: format!("`{v}` is not an SNS topic ARN") })
                        }
                    })
                })
            },
            Outside::Identifier("arn:aws:sns:<region>:<account>:<topic>"),
        )
    }

    fn image_source(
        &mut self,
        field: &str,
        value: &str,
        region_field: &str,
        region: &Option<String>,
    ) -> Option<ImageSource> {
        if value.starts_with("ami-") {
            let id = self.check(field, AmiId::parse(value));
            let region = match region {
                Some(r) => self.check(region_field, Region::parse(r)),
                None => {
                    self.error(field, format!("the external image `{value}` needs its region")).help = Some(format!(
                        "add `{}` with the region the AMI is in",
                        region_field.trim_start_matches("spec.")
                    ));
                    None
                }
            };
            return Some(ImageSource::External { id: id?, region: region? });
        }
        if region.is_some() {
            self.error(region_field, "only an external `ami-…` image takes a region").help =
                Some("a PrivateImage of the stack is in the region its manifest says; remove this field".into());
        }
        self.reference(
            field,
            value,
            Kind::PrivateImage,
            |_| None::<Result<(), InvalidId>>,
            Outside::Identifier("ami-…"),
        )
        .and_then(|r| r.stack_resource().cloned())
        .map(ImageSource::Stack)
    }

    fn iam_path(&mut self, field: &str, path: &Option<String>) -> String {
        let path = path.clone().unwrap_or_else(|| "/".to_owned());
        let valid = path.starts_with('/')
            && path.ends_with('/')
            && path.len() <= 512
            && path.chars().all(|c| ('!'..='~').contains(&c));
        if !valid {
            self.error(field, format!("`{path}` is not an IAM path")).help =
                Some("a path begins and ends with `/`, e.g. /imagectl/ (at most 512 printable characters)".into());
        }
        path
    }

    fn convert(mut self) -> Option<Resource> {
        let manifest = self.document.manifest.clone();
        match &manifest {
            Manifest::Stack(_) => None,
            Manifest::Role(m) => self.role(m).map(Resource::Role),
            Manifest::InstanceProfile(m) => self.instance_profile(m).map(Resource::InstanceProfile),
            Manifest::Bucket(m) => self.bucket_resource(m).map(Resource::Bucket),
            Manifest::Topic(m) => self.topic_resource(m).map(Resource::Topic),
            Manifest::PackageGroup(m) => self.package_group(m).map(Resource::PackageGroup),
            Manifest::PrivateImage(m) => self.private_image(m).map(Resource::PrivateImage),
            Manifest::ImageCopy(m) => self.image_copy(m).map(Resource::ImageCopy),
            Manifest::ImageShare(m) => self.image_share(m).map(Resource::ImageShare),
        }
    }

    fn iam_name(&mut self, name: &str, max: usize) {
        let valid = !name.is_empty()
            && name.len() <= max
            && name.chars().all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c));
        if !valid {
            self.error("metadata.name", format!("`{name}` is not a valid IAM name")).help =
                Some(format!("1 to {max} letters, digits or + = , . @ _ -"));
        }
    }

    fn role(&mut self, m: &raw::Envelope<raw::RoleSpec>) -> Option<Role> {
        let spec = &m.spec;
        self.iam_name(&m.metadata.name, 64);
        let path = self.iam_path("spec.path", &spec.path);
        let trust_policy = match (&spec.assumed_by, &spec.assume_role_policy) {
            (Some(principals), None) if !principals.is_empty() => Some(serde_json::json!({
                "Version": "2012-10-17",
                "Statement": [{
                    "Effect": "Allow",
                    "Principal": {"Service": if principals.len() == 1 { serde_json::json!(principals[0]) } else { serde_json::json!(principals) }},
                    "Action": "sts:AssumeRole"
                }]
            })),
            (None, Some(document)) => self.policy_document("spec.assumeRolePolicy", &document.0),
            (Some(_), None) => {
                self.error("spec.assumedBy", "`assumedBy` lists no principal, so nothing could assume the role").help =
                    Some("list the service principals that assume it, e.g. `assumedBy: [ec2.amazonaws.com]`".into());
                None
            }
            (Some(_), Some(_)) => {
                self.error("spec.assumedBy", "both `assumedBy` and `assumeRolePolicy` are set").help = Some(
                    "keep one: `assumedBy` lists service principals, `assumeRolePolicy` is a full trust policy".into(),
                );
                None
            }
            _ => {
                self.error("spec", "a role needs a trust policy").help =
                    Some("add `assumedBy: [ec2.amazonaws.com]` or a full `assumeRolePolicy` document".into());
                None
            }
        };
        let mut managed_policies = BTreeSet::new();
        for (i, arn) in spec.managed_policies.iter().enumerate() {
            let field = format!("spec.managedPolicies[{i}]");
            if !arn.starts_with("arn:") {
                // Policies are attached by ARN; a bare name is most often an AWS managed policy's.
                self.error(&field, format!("`{arn}` is not a managed policy ARN")).help = Some(format!(
                    "managed policies are given by ARN: arn:aws:iam::aws:policy/{arn} for an AWS managed policy, arn:aws:iam::<account>:policy/{arn} for your own"
                ));
                continue;
            }
            let parsed = Arn::parse(arn).and_then(|a| {
                if a.service() == "iam" && a.resource().starts_with("policy/") {
                    Ok(a)
                } else {
                    Err(InvalidId {
                        reason: format!(
                            "`{arn}` is not a managed policy ARN (arn:aws:iam::<account|aws>:policy/<name>)"
                        ),
                    })
                }
            });
            if let Some(arn) = self.check(&field, parsed) {
                managed_policies.insert(arn);
            }
        }
        let mut inline_policies = BTreeMap::new();
        for (name, document) in &spec.inline_policies {
            if let Some(doc) = self.policy_document(&format!("spec.inlinePolicies.{name}"), &document.0) {
                inline_policies.insert(name.clone(), doc);
            }
        }
        if let Some(duration) = spec.max_session_duration {
            if !(3600..=43200).contains(&duration) {
                self.error("spec.maxSessionDuration", format!("{duration} seconds is out of range")).help =
                    Some("between 3600 (1 hour) and 43200 (12 hours)".into());
            }
        }
        let tags = self.tags(&spec.tags);
        Some(Role {
            name: m.metadata.name.clone(),
            path,
            description: spec.description.clone(),
            trust_policy: trust_policy?,
            managed_policies,
            inline_policies,
            max_session_duration: spec.max_session_duration,
            tags,
            lifecycle: Self::lifecycle(&m.metadata),
        })
    }

    fn policy_document(&mut self, field: &str, document: &serde_json::Value) -> Option<serde_json::Value> {
        let statements = document.get("Statement");
        let ok = document.is_object()
            && matches!(statements, Some(serde_json::Value::Array(_) | serde_json::Value::Object(_)));
        if !ok {
            self.error(field, "not an IAM policy document").help =
                Some("a mapping with `Version: \"2012-10-17\"` and a `Statement` list".into());
            return None;
        }
        if let Some(version) = document.get("Version") {
            if version != "2012-10-17" && version != "2008-10-17" {
                self.error(&format!("{field}.Version"), format!("policy version {version} is unknown")).help =
                    Some("use \"2012-10-17\" (quoted, so YAML keeps it a string)".into());
            }
        }
        Some(document.clone())
    }

    fn instance_profile(&mut self, m: &raw::Envelope<raw::InstanceProfileSpec>) -> Option<InstanceProfile> {
        self.iam_name(&m.metadata.name, 128);
        let path = self.iam_path("spec.path", &m.spec.path);
        let role = self.iam_arn("spec.role", &m.spec.role, Kind::Role, "role");
        let tags = self.tags(&m.spec.tags);
        Some(InstanceProfile {
            name: m.metadata.name.clone(),
            path,
            role: role?,
            tags,
            lifecycle: Self::lifecycle(&m.metadata),
        })
    }

    fn bucket_resource(&mut self, m: &raw::Envelope<raw::BucketSpec>) -> Option<Bucket> {
        let spec = &m.spec;
        let name = self.check("metadata.name", BucketName::parse(&m.metadata.name));
        let region = self.region("spec.region", &spec.region);
        let encryption = match &spec.encryption {
            None => BucketEncryption::S3,
            Some(raw::BucketEncryption { algorithm: raw::EncryptionAlgorithm::S3, kms_key: Some(_) }) => {
                self.error("spec.encryption.kmsKey", "a KMS key needs `algorithm: kms`").help =
                    Some("set `algorithm: kms`, or remove `kmsKey` for SSE-S3".into());
                BucketEncryption::S3
            }
            Some(raw::BucketEncryption { algorithm: raw::EncryptionAlgorithm::S3, .. }) => BucketEncryption::S3,
            Some(raw::BucketEncryption { algorithm: raw::EncryptionAlgorithm::Kms, kms_key }) => {
                BucketEncryption::Kms { key: kms_key.clone() }
            }
        };
        if spec.expire_after_days == Some(0) {
            self.error("spec.expireAfterDays", "0 days would expire every object at once").help =
                Some("a positive number of days, or remove the field to keep objects".into());
        }
        let tags = self.tags(&spec.tags);
        Some(Bucket {
            name: name?,
            region: region?,
            expire_after_days: spec.expire_after_days,
            versioning: spec.versioning,
            block_public_access: spec.block_public_access,
            encryption,
            force_destroy: spec.force_destroy,
            tags,
            lifecycle: Self::lifecycle(&m.metadata),
        })
    }

    fn topic_resource(&mut self, m: &raw::Envelope<raw::TopicSpec>) -> Option<Topic> {
        let spec = &m.spec;
        let name = &m.metadata.name;
        let valid = !name.is_empty()
            && name.len() <= 256
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            self.error("metadata.name", format!("`{name}` is not a valid SNS topic name")).help =
                Some("1 to 256 letters, digits, hyphens or underscores".into());
        }
        let region = self.region("spec.region", &spec.region);
        const PROTOCOLS: [&str; 9] =
            ["email", "email-json", "http", "https", "sqs", "lambda", "sms", "application", "firehose"];
        let mut subscriptions = BTreeSet::new();
        for (i, s) in spec.subscriptions.iter().enumerate() {
            if !PROTOCOLS.contains(&s.protocol.as_str()) {
                self.error(
                    &format!("spec.subscriptions[{i}].protocol"),
                    format!("`{}` is not an SNS protocol", s.protocol),
                )
                .help = Some(format!("one of {}", PROTOCOLS.join(", ")));
                continue;
            }
            let fits = match s.protocol.as_str() {
                "email" | "email-json" => s.endpoint.contains('@'),
                "http" => s.endpoint.starts_with("http://"),
                "https" => s.endpoint.starts_with("https://"),
                "sqs" | "lambda" | "firehose" | "application" => s.endpoint.starts_with("arn:"),
                _ => !s.endpoint.is_empty(),
            };
            if !fits {
                self.error(
                    &format!("spec.subscriptions[{i}].endpoint"),
                    format!("`{}` is not an endpoint for the {} protocol", s.endpoint, s.protocol),
                )
                .help = Some(
                    "email: an address; http(s): a URL of that scheme; sqs, lambda, firehose, application: an ARN"
                        .into(),
                );
            }
            subscriptions.insert(Subscription { protocol: s.protocol.clone(), endpoint: s.endpoint.clone() });
        }
        let tags = self.tags(&spec.tags);
        Some(Topic {
            name: name.clone(),
            region: region?,
            display_name: spec.display_name.clone(),
            kms_key: spec.kms_key.clone(),
            subscriptions,
            tags,
            lifecycle: Self::lifecycle(&m.metadata),
        })
    }

    fn package_group(&mut self, m: &raw::Envelope<raw::PackageGroupSpec>) -> Option<PackageGroup> {
        let spec = &m.spec;
        let name = &m.metadata.name;
        // Say which rule the name breaks: a long name that also holds a dot needs both fixes named.
        let mut broken = Vec::new();
        if name.is_empty() || name.len() > MAX_PACKAGE_GROUP_NAME {
            broken.push(format!(
                "is {} characters long, and a package-group name has 1 to {MAX_PACKAGE_GROUP_NAME}",
                name.len()
            ));
        }
        let mut bad: Vec<char> =
            name.chars().filter(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-')).collect();
        bad.dedup();
        if !bad.is_empty() {
            let listed: Vec<String> = bad.iter().map(|c| format!("`{c}`")).collect();
            broken.push(format!(
                "holds {}, and a package-group name holds only letters, digits, `_` and `-`",
                listed.join(" ")
            ));
        }
        if !broken.is_empty() {
            self.error("metadata.name", format!("the package-group name {}", broken.join("; it also "))).help = Some(
                "fewer than 100 letters, digits, underscores and dashes; include a revision, e.g. acme-agent-2-4-linux-r1".into(),
            );
        }
        let platform = match spec.platform {
            raw::Platform::Linux => Platform::Linux,
            raw::Platform::Windows => Platform::Windows,
        };
        if spec.operating_systems.is_empty() {
            self.error("spec.operatingSystems", "a package group must name at least one operating system").help =
                Some(format!("one or more of {}", operating_systems(platform).join(", ")));
        }
        for (i, os) in spec.operating_systems.iter().enumerate() {
            if !operating_systems(platform).contains(&os.as_str()) {
                let other = match platform {
                    Platform::Linux => Platform::Windows,
                    Platform::Windows => Platform::Linux,
                };
                let known = operating_systems(platform).join(", ");
                let (message, help) = if operating_systems(other).contains(&os.as_str()) {
                    (
                        format!(
                            "`{os}` is a {other:?} operating system; packages of one platform do not run on the other"
                        ),
                        format!("one of {known}; define a second package group for {other:?}"),
                    )
                } else {
                    (format!("`{os}` is not a known {platform:?} operating system"), format!("one of {known}"))
                };
                self.error(&format!("spec.operatingSystems[{i}]"), message).help = Some(help);
            }
        }
        let artifacts_bucket = self.bucket("spec.artifactsBucket", &spec.artifacts_bucket);
        let base_dir = self.document.file.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut packages = Vec::new();
        for (i, package) in spec.packages.iter().enumerate() {
            if let Some(file) = self.package_file(&format!("spec.packages[{i}].path"), &base_dir, package) {
                packages.push(file);
            }
        }
        let installers: Vec<usize> =
            spec.packages.iter().enumerate().filter(|(_, p)| p.installer).map(|(i, _)| i).collect();
        match installers.as_slice() {
            [] => {
                self.error("spec.packages", "no package is marked as the installer").help = Some(
                    "mark exactly one package with `installer: true`: the script or program that runs the installation"
                        .into(),
                );
            }
            [one] => {
                let written = &spec.packages[*one].path;
                let extension =
                    Path::new(written).extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
                if !installer_types(platform).contains(&extension.as_str()) {
                    self.error(
                        &format!("spec.packages[{one}].path"),
                        format!("`{written}` cannot be a {platform:?} installer"),
                    )
                    .help = Some(format!(
                        "{platform:?} installers are {}",
                        installer_types(platform).iter().map(|e| format!(".{e}")).collect::<Vec<_>>().join(" ")
                    ));
                } else if let Some(file) = packages.iter().find(|p| p.installer) {
                    let findings = installer_lint::lint_file(&file.source, platform);
                    for finding in findings {
                        let diagnostic =
                            finding.into_diagnostic(&file.path, self.document, &format!("spec.packages[{one}].path"));
                        self.checker.push(diagnostic.resource(id_of(&self.document.manifest)));
                    }
                }
            }
            many => {
                let listed: Vec<_> = many.iter().map(|i| format!("packages[{i}]")).collect();
                self.error(
                    &format!("spec.packages[{}].installer", many[1]),
                    format!("{} packages are marked as the installer ({})", many.len(), listed.join(", ")),
                )
                .help = Some("exactly one package is the installer; it orchestrates the others".into());
            }
        }
        let mut seen = BTreeMap::new();
        for (i, p) in packages.iter().enumerate() {
            if let Some(first) = seen.insert(p.file_name.clone(), i) {
                self.error(
                    &format!("spec.packages[{i}].path"),
                    format!("`{}` has the same file name as packages[{first}]", p.path),
                )
                .help = Some("packages land in one directory on the instance; give each a distinct file name".into());
            }
        }
        let timeout_minutes = spec.timeout_minutes.unwrap_or(DEFAULT_TIMEOUT_MINUTES);
        if timeout_minutes == 0 || timeout_minutes > 24 * 60 {
            self.error("spec.timeoutMinutes", format!("{timeout_minutes} minutes is out of range")).help =
                Some("between 1 and 1440 minutes".into());
        }
        let test_builds = match &spec.test_builds {
            Some(t) => Some(self.test_builds(t, &spec.operating_systems)?),
            None => None,
        };
        let tags = self.tags(&spec.tags);
        if packages.len() != spec.packages.len() || spec.packages.is_empty() {
            return None;
        }
        let content_digest = content_digest(&packages);
        Some(PackageGroup {
            name: name.clone(),
            platform,
            operating_systems: spec.operating_systems.clone(),
            artifacts_bucket: artifacts_bucket?,
            packages,
            installer_arguments: spec.installer_arguments.clone(),
            timeout_minutes,
            content_digest,
            test_builds,
            tags,
            lifecycle: Self::lifecycle(&m.metadata),
        })
    }

    fn test_builds(&mut self, t: &raw::TestBuilds, operating_systems: &[String]) -> Option<TestBuilds> {
        let region = self.region("spec.testBuilds.region", &t.region);
        let instance_profile = self.iam_arn(
            "spec.testBuilds.instanceProfile",
            &t.instance_profile,
            Kind::InstanceProfile,
            "instance-profile",
        );
        let automation_role = self.iam_arn("spec.testBuilds.automationRole", &t.automation_role, Kind::Role, "role");
        let logs_bucket = self.bucket("spec.testBuilds.logsBucket", &t.logs_bucket);
        let instance_type = t.instance_type.clone().unwrap_or_else(|| DEFAULT_INSTANCE_TYPE.to_owned());
        if t.base_images.is_empty() {
            self.error("spec.testBuilds.baseImages", "no base image for any operating system").help = Some(
                "map each operating system to test to a base image, e.g. amazon-linux-2023: {parameter: …}".into(),
            );
        }
        let mut base_images = BTreeMap::new();
        for (os, base) in &t.base_images {
            let field = format!("spec.testBuilds.baseImages.{os}");
            if !operating_systems.contains(os) {
                self.error(&field, format!("`{os}` is not one of this group's operatingSystems")).help =
                    Some(format!("test one of {}", operating_systems.join(", ")));
                continue;
            }
            if let Some(image) = self.base_image(&field, base, false) {
                base_images.insert(os.clone(), image);
            }
        }
        Some(TestBuilds {
            region: region?,
            instance_profile: instance_profile?,
            automation_role: automation_role?,
            logs_bucket: logs_bucket?,
            instance_type,
            base_images,
        })
    }

    fn package_file(&mut self, field: &str, base_dir: &Path, package: &raw::Package) -> Option<PackageFile> {
        let source: PathBuf = base_dir.join(&package.path);
        let bytes = match std::fs::read(&source) {
            Ok(bytes) => bytes,
            Err(e) => {
                let message = match e.kind() {
                    std::io::ErrorKind::NotFound => {
                        format!("the package file `{}` does not exist", source.display())
                    }
                    _ => format!("cannot read the package file `{}`: {e}", source.display()),
                };
                self.error(field, message).help = Some(format!(
                    "package paths are relative to the directory of the manifest that names them ({})",
                    self.document.file.display()
                ));
                return None;
            }
        };
        let file_name = Path::new(&package.path).file_name()?.to_string_lossy().into_owned();
        Some(PackageFile {
            path: package.path.clone(),
            source,
            file_name,
            sha256: hex::encode(Sha256::digest(&bytes)),
            size: bytes.len() as u64,
            installer: package.installer,
        })
    }

    /// Checks a base image: exactly one of id, lookup, parameter (or, where `allow_image`, another PrivateImage).
    fn base_image(&mut self, field: &str, base: &raw::BaseImage, allow_image: bool) -> Option<BaseImage> {
        if !allow_image && base.image.is_some() {
            self.error(&format!("{field}.image"), "a test build's base image must be an AMI, not a PrivateImage")
                .help = Some("use `id:`, `lookup:` or `parameter:`".into());
            return None;
        }
        let written: Vec<&str> = [
            base.id.as_ref().map(|_| "id"),
            base.lookup.as_ref().map(|_| "lookup"),
            base.parameter.as_ref().map(|_| "parameter"),
            base.image.as_ref().map(|_| "image"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if written.is_empty() {
            self.error(field, "the base image is not given: exactly one of id, lookup, parameter or image is needed")
                .help =
                Some("e.g. `parameter: /aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64`".into());
            None
        } else if written.len() > 1 {
            self.error(
                field,
                format!("{} are given; exactly one of id, lookup, parameter or image is needed", written.join(" and ")),
            )
            .help = Some(format!("keep one of {} and remove the others", written.join(", ")));
            None
        } else if let Some(id) = &base.id {
            self.check(&format!("{field}.id"), AmiId::parse(id)).map(BaseImage::Id)
        } else if let Some(lookup) = &base.lookup {
            let mut ok = true;
            if lookup.owners.is_empty() {
                self.error(&format!("{field}.lookup.owners"), "a lookup needs at least one owner").help =
                    Some("account IDs, `self`, `amazon` or `aws-marketplace`: an unowned name pattern could match anyone's image".into());
                ok = false;
            }
            for (i, owner) in lookup.owners.iter().enumerate() {
                if !["self", "amazon", "aws-marketplace"].contains(&owner.as_str()) && AccountId::parse(owner).is_err()
                {
                    self.error(&format!("{field}.lookup.owners[{i}]"), format!("`{owner}` is not an image owner"))
                        .help = Some("a 12-digit account ID, `self`, `amazon` or `aws-marketplace`".into());
                    ok = false;
                }
            }
            if let Some(arch) = &lookup.architecture {
                if !["x86_64", "arm64", "i386", "x86_64_mac", "arm64_mac"].contains(&arch.as_str()) {
                    self.error(
                        &format!("{field}.lookup.architecture"),
                        format!("`{arch}` is not an EC2 architecture"),
                    )
                    .help = Some("x86_64 or arm64".into());
                    ok = false;
                }
            }
            ok.then(|| BaseImage::Lookup {
                owners: lookup.owners.clone(),
                name: lookup.name.clone(),
                architecture: lookup.architecture.clone(),
            })
        } else if let Some(parameter) = &base.parameter {
            if parameter.starts_with('/') || parameter.starts_with("arn:") {
                Some(BaseImage::Parameter(parameter.clone()))
            } else {
                self.error(&format!("{field}.parameter"), format!("`{parameter}` is not an SSM parameter name")).help =
                    Some("a full parameter name beginning with `/`, e.g. /aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64".into());
                None
            }
        } else {
            let image = base.image.as_deref().unwrap_or_default();
            self.reference(
                &format!("{field}.image"),
                image,
                Kind::PrivateImage,
                |_| None::<Result<(), InvalidId>>,
                Outside::Note("an AMI outside the stack is given with `id:`, `lookup:` or `parameter:` instead"),
            )
            .and_then(|r| r.stack_resource().cloned())
            .map(BaseImage::Image)
        }
    }

    fn private_image(&mut self, m: &raw::Envelope<raw::PrivateImageSpec>) -> Option<PrivateImage> {
        let spec = &m.spec;
        let region = self.region("spec.region", &spec.region);
        let base_image = self.base_image("spec.baseImage", &spec.base_image, true);
        let package_group = self
            .reference(
                "spec.packageGroup",
                &spec.package_group,
                Kind::PackageGroup,
                |_| None::<Result<(), InvalidId>>,
                Outside::Note("package groups are always defined in the stack"),
            )
            .and_then(|r| r.stack_resource().cloned());
        let instance_profile =
            self.iam_arn("spec.instanceProfile", &spec.instance_profile, Kind::InstanceProfile, "instance-profile");
        let automation_role = self.iam_arn("spec.automationRole", &spec.automation_role, Kind::Role, "role");
        let logs_bucket = self.bucket("spec.logsBucket", &spec.logs_bucket);
        let notifications = match &spec.notifications {
            Some(topic) => Some(self.topic("spec.notifications", topic)?),
            None => None,
        };
        if let Err(e) = check_ami_name(&spec.image_name, AMI_NAME_SUFFIX_LEN) {
            self.error("spec.imageName", e.to_string());
        }
        if let Some(description) = &spec.description {
            if description.len() > 255 {
                self.error(
                    "spec.description",
                    format!("{} characters; an AMI description holds at most 255", description.len()),
                );
            }
        }
        let instance_type = spec.instance_type.clone().unwrap_or_else(|| DEFAULT_INSTANCE_TYPE.to_owned());
        if !instance_type.contains('.') {
            self.error("spec.instanceType", format!("`{instance_type}` is not an instance type")).help =
                Some("family.size, e.g. t3.medium".into());
        }
        if let Some(network) = &spec.network {
            if !network.subnet.starts_with("subnet-") {
                self.error("spec.network.subnet", format!("`{}` is not a subnet ID", network.subnet)).help =
                    Some("subnet-…; the build instance uses the default VPC when `network` is absent".into());
            }
            for (i, group) in network.security_groups.iter().enumerate() {
                if !group.starts_with("sg-") {
                    self.error(
                        &format!("spec.network.securityGroups[{i}]"),
                        format!("`{group}` is not a security group ID"),
                    )
                    .help = Some("sg-…".into());
                }
            }
        }
        let retention = match &spec.retention {
            Some(r) => {
                if r.keep == 0 {
                    self.error("spec.retention.keep", "keeping 0 images would delete the image just built").help =
                        Some("keep at least 1".into());
                }
                Retention {
                    keep: r.keep,
                    deprecate_after_days: r.deprecate_after_days,
                    deregistration_protection: r.deregistration_protection,
                }
            }
            None => {
                Retention { keep: DEFAULT_KEEP_IMAGES, deprecate_after_days: None, deregistration_protection: false }
            }
        };
        if let Some(publish) = &spec.publish {
            if !publish.parameter.starts_with('/')
                || publish.parameter.starts_with("/aws")
                || publish.parameter.starts_with("/ssm")
            {
                self.error("spec.publish.parameter", format!("`{}` cannot be published to", publish.parameter)).help =
                    Some("a parameter name beginning with `/`, outside the reserved /aws and /ssm prefixes".into());
            }
        }
        let scan = match &spec.scan {
            Some(scan) => {
                if scan.command.is_none() && !scan.builtin {
                    self.warning("spec.scan", "no scan runs: the built-in scan is off and no command is given").help =
                        Some("set `builtin: true`, or give a `command` whose non-zero exit fails the build".into());
                }
                Scan { command: scan.command.clone(), builtin: scan.builtin }
            }
            None => Scan { command: None, builtin: true },
        };
        for (i, device) in spec.block_devices.iter().enumerate() {
            if let Some(t) = &device.volume_type {
                if !["gp2", "gp3", "io1", "io2", "st1", "sc1", "standard"].contains(&t.as_str()) {
                    self.error(
                        &format!("spec.blockDevices[{i}].volumeType"),
                        format!("`{t}` is not an EBS volume type"),
                    )
                    .help = Some("gp3, gp2, io1, io2, st1, sc1 or standard".into());
                }
            }
            if device.kms_key.is_some() && device.encrypted == Some(false) {
                self.error(&format!("spec.blockDevices[{i}].kmsKey"), "a KMS key on an unencrypted volume").help =
                    Some("set `encrypted: true` or remove `kmsKey`".into());
            }
        }
        let tags = self.tags(&spec.tags);
        Some(PrivateImage {
            name: m.metadata.name.clone(),
            region: region?,
            base_image: base_image?,
            package_group: package_group?,
            instance_profile: instance_profile?,
            automation_role: automation_role?,
            logs_bucket: logs_bucket?,
            image_name: spec.image_name.clone(),
            description: spec.description.clone(),
            instance_type,
            network: spec.network.as_ref().map(|n| Network {
                subnet: n.subnet.clone(),
                security_groups: n.security_groups.clone(),
                associate_public_ip: n.associate_public_ip,
            }),
            notifications,
            delivery: match spec.delivery {
                Some(raw::Delivery::UserData) => Delivery::UserData,
                Some(raw::Delivery::Ssm) | None => Delivery::Ssm,
            },
            scan,
            generalize: spec.generalize,
            no_reboot: spec.no_reboot,
            block_devices: spec
                .block_devices
                .iter()
                .map(|d| BlockDevice {
                    device_name: d.device_name.clone(),
                    volume_size: d.volume_size,
                    volume_type: d.volume_type.clone(),
                    encrypted: d.encrypted,
                    kms_key: d.kms_key.clone(),
                    iops: d.iops,
                    throughput: d.throughput,
                })
                .collect(),
            retention,
            publish_parameter: spec.publish.as_ref().map(|p| p.parameter.clone()),
            tags,
            lifecycle: Self::lifecycle(&m.metadata),
        })
    }

    fn image_copy(&mut self, m: &raw::Envelope<raw::ImageCopySpec>) -> Option<ImageCopy> {
        let spec = &m.spec;
        let source = self.image_source("spec.source", &spec.source, "spec.sourceRegion", &spec.source_region);
        if spec.regions.is_empty() {
            self.error("spec.regions", "an image copy needs at least one target region").help =
                Some("e.g. regions: [eu-west-1]".into());
        }
        // Names are checked where they are written, once each, not once per region that uses them.
        if let Some(name) = &spec.name {
            if let Err(e) = check_ami_name(name, 0) {
                self.error("spec.name", e.to_string());
            }
        }
        for (region, overrides) in &spec.per_region {
            if let Some(name) = &overrides.name {
                if let Err(e) = check_ami_name(name, 0) {
                    self.error(&format!("spec.perRegion.{region}.name"), e.to_string());
                }
            }
        }
        let mut regions = BTreeMap::new();
        // Regions whose copy would get the spec-level KMS key without being encrypted: one error at `kmsKey`.
        let mut unencrypted_with_spec_key = Vec::new();
        for (i, region) in spec.regions.iter().enumerate() {
            let field = format!("spec.regions[{i}]");
            let Some(region) = self.check(&field, Region::parse(region)) else {
                continue;
            };
            let overrides = spec.per_region.get(region.as_str());
            let settings = CopySettings {
                name: overrides.and_then(|o| o.name.clone()).or_else(|| spec.name.clone()),
                description: overrides.and_then(|o| o.description.clone()).or_else(|| spec.description.clone()),
                encrypted: overrides.and_then(|o| o.encrypted).unwrap_or(spec.encrypted),
                kms_key: overrides.and_then(|o| o.kms_key.clone()).or_else(|| spec.kms_key.clone()),
            };
            if settings.kms_key.is_some() && !settings.encrypted {
                if overrides.is_some_and(|o| o.kms_key.is_some()) {
                    self.error(
                        &format!("spec.perRegion.{region}.kmsKey"),
                        format!("a KMS key is set for {region} but the copy there is not encrypted"),
                    )
                    .help = Some(format!("set `encrypted: true` in perRegion.{region} or remove its `kmsKey`"));
                } else if !unencrypted_with_spec_key.contains(&region) {
                    unencrypted_with_spec_key.push(region.clone());
                }
            }
            if regions.insert(region.clone(), settings).is_some() {
                self.error(&field, format!("{region} is listed twice")).help =
                    Some("list each target region once".into());
            }
        }
        if !unencrypted_with_spec_key.is_empty() {
            let listed: Vec<&str> = unencrypted_with_spec_key.iter().map(Region::as_str).collect();
            self.error(
                "spec.kmsKey",
                format!("a KMS key is set but the copies to {} are not encrypted", listed.join(", ")),
            )
            .help = Some("set `encrypted: true` (for all regions, or in perRegion) or remove `kmsKey`".into());
        }
        for region in spec.per_region.keys() {
            if !spec.regions.contains(region) {
                self.error(&format!("spec.perRegion.{region}"), format!("{region} is not in `regions`")).help =
                    Some("settings per region apply only to regions listed in `regions`".into());
            }
        }
        let tags = self.tags(&spec.tags);
        Some(ImageCopy {
            name: m.metadata.name.clone(),
            source: source?,
            regions,
            tags,
            lifecycle: Self::lifecycle(&m.metadata),
        })
    }

    fn image_share(&mut self, m: &raw::Envelope<raw::ImageShareSpec>) -> Option<ImageShare> {
        let spec = &m.spec;
        let image = self.image_source("spec.image", &spec.image, "spec.region", &spec.region);
        let mut accounts = BTreeSet::new();
        for (i, account) in spec.accounts.iter().enumerate() {
            if let Some(a) = self.check(&format!("spec.accounts[{i}]"), AccountId::parse(account)) {
                accounts.insert(a);
            }
        }
        let mut organizations = BTreeSet::new();
        for (i, arn) in spec.organizations.iter().enumerate() {
            if let Some(a) = self.check(&format!("spec.organizations[{i}]"), OrganizationArn::parse(arn)) {
                organizations.insert(a);
            }
        }
        let mut organizational_units = BTreeSet::new();
        for (i, arn) in spec.organizational_units.iter().enumerate() {
            if let Some(a) = self.check(&format!("spec.organizationalUnits[{i}]"), OuArn::parse(arn)) {
                organizational_units.insert(a);
            }
        }
        if spec.public && spec.share_snapshots {
            self.error("spec.shareSnapshots", "snapshots of a public image would be public too").help =
                Some("share snapshots only with accounts: remove `public: true` or `shareSnapshots`".into());
        }
        if spec.share_snapshots && spec.accounts.is_empty() && !spec.public {
            self.warning("spec.shareSnapshots", "snapshot sharing applies to accounts, and none are listed").help =
                Some(
                    "list the `accounts` that may create volumes from the snapshots, or remove `shareSnapshots`".into(),
                );
        }
        Some(ImageShare {
            name: m.metadata.name.clone(),
            image: image?,
            copies: Vec::new(),
            accounts,
            organizations,
            organizational_units,
            public: spec.public,
            additive: spec.mode == raw::ShareMode::Additive,
            share_snapshots: spec.share_snapshots,
            lifecycle: Self::lifecycle(&m.metadata),
        })
    }
}

/// SHA-256 over each package's file name, installer flag and content hash, in manifest order.
fn content_digest(packages: &[PackageFile]) -> String {
    let mut hasher = Sha256::new();
    for p in packages {
        hasher.update(p.file_name.as_bytes());
        hasher.update([0, u8::from(p.installer)]);
        hasher.update(p.sha256.as_bytes());
        hasher.update([b'\n']);
    }
    hex::encode(hasher.finalize())
}

/// A share of a stack image also covers every copy of that image.
fn link_shares_to_copies(model: &mut Model) {
    let copies: Vec<(ResourceId, ImageSource)> = model
        .resources
        .iter()
        .filter_map(|(id, r)| match r {
            Resource::ImageCopy(c) => Some((id.clone(), c.source.clone())),
            _ => None,
        })
        .collect();
    for resource in model.resources.values_mut() {
        if let Resource::ImageShare(share) = resource {
            share.copies =
                copies.iter().filter(|(_, source)| *source == share.image).map(|(id, _)| id.clone()).collect();
        }
    }
}

/// Rules that relate two resources: the logs bucket's region, package-group platform versus delivery.
fn check_across_resources(model: &Model, checker: &mut Checker) {
    for (id, resource) in &model.resources {
        if let Resource::PackageGroup(PackageGroup { test_builds: Some(t), .. }) = resource {
            if let Ref::Stack(bucket_id) = &t.logs_bucket {
                if let Some(Resource::Bucket(bucket)) = model.resources.get(bucket_id) {
                    if bucket.region != t.region {
                        checker.push(
                            Diagnostic::error(format!(
                                "the logs bucket `{}` is in {}, but the test builds run in {}",
                                bucket.name, bucket.region, t.region
                            ))
                            .at(model.origins[id].locate("spec.testBuilds.logsBucket"))
                            .resource(id)
                            .field("spec.testBuilds.logsBucket")
                            .help(format!(
                                "build logs must be stored in the builds' region: use a bucket in {}",
                                t.region
                            )),
                        );
                    }
                }
            }
        }
    }
    for (id, resource) in &model.resources {
        let Resource::PrivateImage(image) = resource else {
            continue;
        };
        let origin = &model.origins[id];
        if let Ref::Stack(bucket_id) = &image.logs_bucket {
            if let Some(Resource::Bucket(bucket)) = model.resources.get(bucket_id) {
                if bucket.region != image.region {
                    checker.push(
                        Diagnostic::error(format!(
                            "the logs bucket `{}` is in {}, but the image is built in {}",
                            bucket.name, bucket.region, image.region
                        ))
                        .at(origin.locate("spec.logsBucket"))
                        .resource(id)
                        .field("spec.logsBucket")
                        .help(format!(
                            "build logs must be stored in the image's region: use a bucket in {}",
                            image.region
                        )),
                    );
                }
            }
        }
        if let Some(Resource::PackageGroup(group)) = model.resources.get(&image.package_group) {
            if group.platform == Platform::Windows && image.delivery == Delivery::UserData {
                checker.push(
                    Diagnostic::error("Windows package groups are delivered through SSM Run Command")
                        .at(origin.locate("spec.delivery"))
                        .resource(id)
                        .field("spec.delivery")
                        .help("Windows base images must have the SSM agent; remove `delivery: userData`"),
                );
            }
        }
        if let BaseImage::Image(base) = &image.base_image {
            if let Some(Resource::PrivateImage(base_image)) = model.resources.get(base) {
                if base_image.region != image.region {
                    checker.push(
                        Diagnostic::error(format!(
                            "the base image {base} is built in {}, this image in {}",
                            base_image.region, image.region
                        ))
                        .at(origin.locate("spec.baseImage.image"))
                        .resource(id)
                        .field("spec.baseImage.image")
                        .help("layered images are built in the region of their base"),
                    );
                }
            }
        }
    }
}

fn check_cycles(model: &Model, checker: &mut Checker) {
    let graph = DependencyGraph::build(model);
    let Err(cycle) = graph.order() else { return };
    // Each member needs the next (the last needs the first): the field and position of each such reference.
    let hops: Vec<(&ResourceId, Option<String>, Option<Location>)> = cycle
        .members
        .iter()
        .zip(cycle.members.iter().cycle().skip(1))
        .map(|(member, next)| {
            let field = model
                .resources
                .get(member)
                .and_then(|r| r.dependencies().into_iter().find(|d| d.on == *next))
                .map(|d| d.field);
            let location = model.origins.get(member).map(|o| o.locate(field.as_deref().unwrap_or("spec")));
            (member, field, location)
        })
        .collect();
    let first = &cycle.members[0];
    let path: Vec<String> = cycle.members.iter().chain(std::iter::once(first)).map(ToString::to_string).collect();
    let help = if hops.len() == 1 {
        "a resource cannot depend on itself; name another resource here".to_owned()
    } else {
        // This diagnostic is located at the first reference; the help locates the others.
        let others: Vec<String> = hops[1..]
            .iter()
            .zip(cycle.members.iter().cycle().skip(2))
            .map(|((member, field, location), next)| {
                let at = location.as_ref().map(|l| format!(" at {l}")).unwrap_or_default();
                format!("{member} needs {next} through {}{at}", field.as_deref().unwrap_or("spec"))
            })
            .collect();
        format!(
            "{}; a resource cannot depend on itself, directly or through others: break one of these references",
            others.join(", and ")
        )
    };
    let (_, field, location) = &hops[0];
    let mut diagnostic =
        Diagnostic::error(format!("dependency cycle: {}", path.join(" → "))).resource(first).help(help);
    if let Some(field) = field {
        diagnostic = diagnostic.field(field);
    }
    if let Some(location) = location.clone() {
        diagnostic = diagnostic.at(location);
    }
    checker.push(diagnostic);
}

/// How a reference field names a resource outside the stack, for the help of a reference that resolves to nothing.
enum Outside<'a> {
    /// By this form of AWS identifier.
    Identifier(&'a str),
    /// It cannot; this says what to do instead.
    Note(&'a str),
}

/// `a Role`, `an InstanceProfile`: the article a kind's name takes in a message.
fn a(kind: Kind) -> String {
    let article = if kind.as_str().starts_with(['A', 'E', 'I', 'O', 'U']) { "an" } else { "a" };
    format!("{article} {kind}")
}

fn is_reserved_tag(key: &str) -> bool {
    key.starts_with("imagectl:") || key.starts_with("aws:")
}

const RESERVED_TAG_HELP: &str =
    "keys beginning with imagectl: are the ownership tags imagectl writes; aws: keys belong to AWS";
